"""Projection: what an in-scope Entra user should look like as an End User, and its content hash.

`project` bundles the End User fields, the "microsoft" object (shaped exactly as in CONTRACTS.md) and the
linked Asset ids; `content_hash` fingerprints them with the sync state so an unchanged user costs one
comparison and writes nothing. Field rules: first/last name from givenName/surname, else split from
displayName; email = mail, else the UPN unless it is a guest (`#EXT#`) UPN, which is not a mailbox;
phone = the first business phone.
Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping

import msgspec

from worker.core.filters import GUEST_MARK, Scoped
from worker.core.macs import normalize_mac
from worker.core.model import END_USER_FIELDS, Asset, Mfa, MirrorUser, SyncState

Fields = dict[str, str | None]
_EMPTY: frozenset[str] = frozenset()
_HASH_ENCODER = msgspec.json.Encoder(order="sorted")

# What `project` makes of the same inputs: raise it with any change to what `project` returns, so End Users
# written before the change are projected again (`input_hash`). `tests/unit/test_input_hash.py` fails when
# the projection of its users changes and this was not raised.
PROJECTION_VERSION = 1


class Projection(msgspec.Struct, frozen=True, kw_only=True):
    """The End User an in-scope Entra user projects to."""

    fields: Fields
    microsoft: dict[str, object]
    asset_ids: frozenset[str]

    def content_hash(self, sync_state: SyncState) -> bytes:
        return content_hash(self.fields, self.microsoft, sync_state=sync_state, asset_ids=self.asset_ids)


def project(u: MirrorUser, *, sku_names: Mapping[str, str], assets: AssetIndex) -> Projection:
    """Everything the End User of `u` should hold."""
    return Projection(
        fields=project_fields(u), microsoft=microsoft_data(u, sku_names), asset_ids=assets.linked(u)
    )


# ---- End User fields ---------------------------------------------------------------------------------------

def project_fields(u: MirrorUser) -> Fields:
    """The sync-owned End User fields, keyed and ordered as END_USER_FIELDS."""
    first_name, last_name = _names(u)
    return {
        "first_name": first_name,
        "last_name": last_name,
        "email": email_of(u),
        "phone": next(filter(None, map(_clean, u.business_phones)), None),
        "mobile": _clean(u.mobile_phone),
        "street": _clean(u.street_address),
        "city": _clean(u.city),
        "state": _clean(u.state),
        "postal_code": _clean(u.postal_code),
        "job_title": _clean(u.job_title),
    }


def _names(u: MirrorUser) -> tuple[str | None, str | None]:
    words = (u.display_name or "").split(maxsplit=1)
    first = _clean(u.given_name) or (words[0] if words else None)
    last = _clean(u.surname) or (words[1].strip() if len(words) > 1 else None)
    return first, last


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def is_guest_upn(upn: str | None) -> bool:
    """A B2B guest's UPN (`jane_fabrikam.com#EXT#@contoso.onmicrosoft.com`): not an address anyone reads."""
    return upn is not None and GUEST_MARK in upn.lower()


def email_of(u: Scoped) -> str | None:
    """The End User email: mail, else the UPN unless it is a guest UPN."""
    upn = _clean(u.user_principal_name)
    return _clean(u.mail) or (None if is_guest_upn(upn) else upn)


def email_keys(u: MirrorUser) -> tuple[str, ...]:
    """Lower-cased addresses that identify `u` when adopting an End User: mail, and a non-guest UPN."""
    mail = u.mail.strip().lower() if u.mail else ""
    upn = u.user_principal_name.strip().lower() if u.user_principal_name else ""
    mail_key = mail and GUEST_MARK not in mail
    upn_key = upn and upn != mail and GUEST_MARK not in upn
    if mail_key:
        return (mail, upn) if upn_key else (mail,)
    return (upn,) if upn_key else ()


# ---- Microsoft data ----------------------------------------------------------------------------------------

def microsoft_data(u: MirrorUser, sku_names: Mapping[str, str]) -> dict[str, object]:
    """The End User's "microsoft" object (CONTRACTS.md); `mfa` is None when MFA status is not known."""
    return {
        "object_id": u.id,
        "user_principal_name": u.user_principal_name,
        "account_enabled": u.account_enabled,
        "licenses": _licenses(u.license_sku_ids, sku_names),
        "last_sign_in_at": u.last_sign_in_at,
        "mfa": _mfa(u.mfa),
    }


def _licenses(sku_ids: Iterable[str], sku_names: Mapping[str, str]) -> list[dict[str, str | None]]:
    """One entry per SKU, sorted by part number (unknown names last), then id; a name may be unknown."""
    named = [(_sku_name(sku_id, sku_names), sku_id) for sku_id in set(sku_ids)]
    named.sort(key=lambda pair: (pair[0] is None, pair[0] or "", pair[1]))
    return [{"sku_id": sku_id, "sku_part_number": name} for name, sku_id in named]


def _sku_name(sku_id: str, sku_names: Mapping[str, str]) -> str | None:
    return sku_names.get(sku_id) or sku_names.get(sku_id.lower())


def _mfa(mfa: Mfa | None) -> dict[str, object] | None:
    if mfa is None:
        return None
    return {
        "registered": mfa.registered,
        "capable": mfa.capable,
        "methods": sorted(set(mfa.methods)),
        "preferred_method": mfa.preferred_method,
    }


# ---- Assets ------------------------------------------------------------------------------------------------

class AssetIndex:
    """An Organization's Assets by normalised MAC: built once per run, then one lookup per device MAC."""

    __slots__ = ("_by_mac",)

    def __init__(self, assets: Iterable[Asset]) -> None:
        by_mac: dict[str, set[str]] = {}
        for asset in assets:
            for mac in filter(None, map(normalize_mac, asset.macs)):
                by_mac.setdefault(mac, set()).add(asset.id)
        self._by_mac = {mac: frozenset(ids) for mac, ids in by_mac.items()}

    def linked(self, u: MirrorUser) -> frozenset[str]:
        """Ids of the Assets sharing a MAC with one of `u`'s managed devices."""
        if not self._by_mac or not u.device_macs:
            return _EMPTY
        found = [self._lookup(mac) for mac in u.device_macs]
        return found[0] if len(found) == 1 else frozenset().union(*found)

    def _lookup(self, mac: str) -> frozenset[str]:
        # Device MACs arrive normalised: look them up as they are before paying for normalisation.
        hit = self._by_mac.get(mac)
        return hit if hit is not None else self._by_mac.get(normalize_mac(mac) or "", _EMPTY)


def linked_asset_ids(u: MirrorUser, assets: AssetIndex | Iterable[Asset]) -> frozenset[str]:
    """Ids of the Assets linked to `u`; pass an `AssetIndex` when calling this for many users."""
    index = assets if isinstance(assets, AssetIndex) else AssetIndex(assets)
    return index.linked(u)


# ---- Content hash ------------------------------------------------------------------------------------------

def content_hash(
    fields: Mapping[str, str | None],
    microsoft: Mapping[str, object] | None,
    *,
    sync_state: SyncState,
    asset_ids: Iterable[str],
) -> bytes:
    """16-byte BLAKE2b of a canonical encoding (fixed field order, sorted keys and asset ids)."""
    payload = (list(map(fields.get, END_USER_FIELDS)), microsoft, sync_state, sorted(asset_ids))
    return hashlib.blake2b(_HASH_ENCODER.encode(payload), digest_size=16).digest()


# ---- Input hash --------------------------------------------------------------------------------------------

def org_inputs_hash(sku_names: Mapping[str, str], assets: Iterable[Asset]) -> bytes:
    """SHA-256 of what `project` reads of an Organization (licence names, Assets), and the projection's version."""
    payload = (PROJECTION_VERSION, sorted(sku_names.items()), sorted((a.id, sorted(a.macs)) for a in assets))
    return hashlib.sha256(_HASH_ENCODER.encode(payload)).digest()


def input_hash(u: MirrorUser, org_hash: bytes) -> bytes | None:
    """Everything `project(u, …)` depends on, as one SHA-256: the mirror's fingerprint of the user
    (`MirrorUser.input_hash`) followed by the Organization's (`org_inputs_hash`). Two equal input hashes mean
    equal projections; None when the mirror gave no fingerprint."""
    if u.input_hash is None:
        return None
    return hashlib.sha256(base64.b64decode(u.input_hash) + org_hash).digest()
