"""Input hashes (issue 12's 100,000-user preview): an End User written from the inputs its Entra user has now is
not projected again, and the filter preview counts such *settled* users from their scope alone.

- `reconcile` trusts an equal input hash, plans nothing for an unchanged user but storing its hash, and gives
  every create and update the hash it was projected from;
- `org_inputs_hash` follows what the projection reads of the Organization, and `PROJECTION_VERSION` follows
  what the projection makes of its inputs (a pinned digest of a corpus's projections);
- `Tally.settle` counts settled users, and `Tally.leave` users without an End User that the filters leave out
  or that left, exactly as `Tally.add` counts what `reconcile` plans for them (properties over generated users,
  filters and exclusions).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.filters import compile_filters
from worker.core.model import Asset, Filters, MirrorUser, OrgContext, ScopedUser, StoredEndUser
from worker.core.ownership import supplied
from worker.core.preview import Tally
from worker.core.projection import (
    PROJECTION_VERSION,
    AssetIndex,
    input_hash,
    org_inputs_hash,
    project,
)
from worker.core.reconcile import leaver_reason, reconcile

ORG = OrgContext(
    organization_id="org1", tenant_id="t1", filters=Filters(),
    sku_names={"sku-e3": "ENTERPRISEPACK"}, assets=(Asset(id="a1", macs=("AA:BB:CC:DD:EE:01",)),),
)
ORG_HASH = org_inputs_hash(ORG.sku_names, ORG.assets)
BASE: dict[str, Any] = {
    "tenant_id": "t1", "id": "u1", "given_name": "Jane", "surname": "Doe", "mail": "Jane@contoso.com",
    "user_principal_name": "jdoe@contoso.com", "department": "Sales", "account_enabled": True, "city": "Paris",
    "license_sku_ids": ("sku-e3",), "device_macs": ("aabbccddee01",),
    "input_hash": base64.b64encode(b"mirror fingerprint of u1").decode(),
}


def entra(**kw: Any) -> MirrorUser:
    return MirrorUser(**(BASE | kw))


def written_from(u: MirrorUser, *, state: str = "synced", inputs: bytes | None = None, stale: bool = False
                 ) -> StoredEndUser:
    """The End User the sync wrote for `u` (its input hash `inputs`); `stale`: holding other content than `u`
    projects to now (so that projecting `u` updates it)."""
    p = project(u, sku_names=ORG.sku_names, assets=AssetIndex(ORG.assets))
    fields = p.fields | ({"city": "Lyon"} if stale else {})
    digest = b"content projected before" if stale else p.content_hash("synced")
    return StoredEndUser(
        id="eu1", organization_id="org1", fields=fields, sync_state=state,  # type: ignore[arg-type]
        entra_tenant_id="t1", entra_object_id=u.id, microsoft=p.microsoft, content_hash=digest,
        asset_ids=p.asset_ids, entra_fields=frozenset(supplied(p.fields)), input_hash=inputs,
    )


def decide(u: MirrorUser, stored: StoredEndUser | None, org: OrgContext = ORG) -> Any:
    linked = {u.id: stored} if stored else {}
    return reconcile([u], org=org, linked=linked, by_email={})


# ---- reconcile ------------------------------------------------------------------------------------------------

def test_an_equal_input_hash_is_trusted_without_projecting() -> None:
    u = entra()
    # The End User holds other content than `u` projects to (say the projection's rules changed): an equal
    # input hash is trusted all the same, which is what `PROJECTION_VERSION` is for.
    plan = decide(u, written_from(u, inputs=input_hash(u, ORG_HASH), stale=True))
    assert (plan.unchanged, plan.updates, plan.input_hashes) == (1, (), ())


@pytest.mark.parametrize("change", [
    pytest.param({"input_hash": base64.b64encode(b"changed in Entra").decode()}, id="user-changed"),
    pytest.param({"input_hash": None}, id="no-fingerprint"),
])
def test_another_input_hash_projects_and_updates(change: dict[str, Any]) -> None:
    before = entra()
    stored = written_from(before, inputs=input_hash(before, ORG_HASH), stale=True)
    plan = decide(entra(**change), stored)
    assert [x.end_user_id for x in plan.updates] == ["eu1"]
    assert plan.updates[0].input_hash == input_hash(entra(**change), ORG_HASH)


def test_another_organization_input_hash_projects() -> None:
    u = entra()
    stored = written_from(u, inputs=input_hash(u, ORG_HASH), stale=True)
    renamed = msgspec.structs.replace(ORG, sku_names={"sku-e3": "OFFICE 365 E3"})
    assert [x.end_user_id for x in decide(u, stored, renamed).updates] == ["eu1"]


@pytest.mark.parametrize("state", ["out_of_scope", "sync_disabled", "deactivated"])
def test_an_equal_input_hash_of_an_end_user_not_synced_is_not_enough(state: str) -> None:
    u = entra()
    plan = decide(u, written_from(u, state=state, inputs=input_hash(u, ORG_HASH)))
    assert [(x.end_user_id, x.sync_state) for x in plan.updates] == [("eu1", "synced")]


def test_an_unchanged_end_user_gets_its_input_hash_stored() -> None:
    u = entra()
    plan = decide(u, written_from(u, inputs=None))
    assert (plan.unchanged, plan.input_hashes) == (1, (("eu1", input_hash(u, ORG_HASH)),))
    no_fingerprint = entra(input_hash=None)
    assert decide(no_fingerprint, written_from(no_fingerprint)).input_hashes == ()


def test_creates_carry_the_input_hash_they_were_projected_from() -> None:
    u = entra()
    assert [c.input_hash for c in decide(u, None).creates] == [input_hash(u, ORG_HASH)]


def test_the_input_hash_is_the_fingerprint_then_the_organization() -> None:
    u = entra()
    assert input_hash(u, ORG_HASH) == hashlib.sha256(b"mirror fingerprint of u1" + ORG_HASH).digest()
    assert input_hash(entra(input_hash=None), ORG_HASH) is None


# ---- what the projection reads of the Organization, and what it makes of it -------------------------------

@pytest.mark.parametrize("org", [
    pytest.param(msgspec.structs.replace(ORG, sku_names={}), id="licence-names"),
    pytest.param(msgspec.structs.replace(ORG, assets=()), id="assets"),
    pytest.param(msgspec.structs.replace(ORG, assets=(Asset(id="a1", macs=("AA:BB:CC:DD:EE:02",)),)),
                 id="asset-macs"),
])
def test_the_organization_inputs_hash_follows_what_the_projection_reads(org: OrgContext) -> None:
    assert org_inputs_hash(org.sku_names, org.assets) != ORG_HASH


def test_the_organization_inputs_hash_ignores_order() -> None:
    two = (Asset(id="a1", macs=("m1", "m2")), Asset(id="a2", macs=("m3",)))
    flipped = (Asset(id="a2", macs=("m3",)), Asset(id="a1", macs=("m2", "m1")))
    assert org_inputs_hash({"a": "A", "b": "B"}, two) == org_inputs_hash({"b": "B", "a": "A"}, flipped)


CORPUS = [entra(), entra(mail=None), entra(user_principal_name="jane_fabrikam.com#EXT#@contoso.com", mail=None),
          entra(given_name=None, surname=None, display_name="Ann  Marie Lee"), entra(business_phones=(" ", "+1 5")),
          entra(account_enabled=False, removed="deleted", last_sign_in_at="2026-01-02T03:04:05Z"),
          entra(device_macs=("aabbccddee01", "aabbccddee02"), license_sku_ids=("sku-e3", "sku-x"))]
# What `project` made of CORPUS at PROJECTION_VERSION: change the projection, raise the version, then this.
PROJECTED = (1, "249da19bda42a381c0b8adc4f16f443863a19a25b18d435bf21999de04e2a104")


def test_a_change_to_the_projection_raises_its_version() -> None:
    encoder = msgspec.json.Encoder(order="sorted")
    made = [project(u, sku_names=ORG.sku_names, assets=AssetIndex(ORG.assets)) for u in CORPUS]
    digest = hashlib.sha256(encoder.encode([(p.fields, p.microsoft, sorted(p.asset_ids)) for p in made])).hexdigest()
    assert (PROJECTION_VERSION, digest) == PROJECTED, (
        "the projection of the corpus changed: raise PROJECTION_VERSION (End Users written before are then "
        "projected again) and pin the new digest here")


# ---- the preview's settled users ----------------------------------------------------------------------------

VALUES = st.sampled_from(["Sales", " sales ", "R&D", None])
DOMAINS = st.sampled_from(["contoso.com", "Fabrikam.com", "x.test"])
SECTION = st.one_of(st.just("all"), st.lists(st.sampled_from(["Sales", "R&D", "Member", "Guest", "Oslo",
                                                               "contoso.com", "fabrikam.com", "g1", "g2"]),
                                             min_size=1, max_size=3).map(tuple))


@st.composite
def settled_users(draw: st.DrawFn) -> list[MirrorUser]:
    users = []
    for i in range(draw(st.integers(1, 8))):
        local = f"user{i}"
        guest = draw(st.booleans())
        users.append(MirrorUser(
            tenant_id="t1", id=f"{i:02d}-{draw(st.integers(0, 99))}", display_name=f"User {i}",
            mail=draw(st.one_of(st.none(), DOMAINS.map(lambda d, local=local: f"{local}@{d}"))),
            user_principal_name=(f"{local}_{draw(DOMAINS)}#EXT#@contoso.com" if guest
                                 else f"{local}@{draw(DOMAINS)}"),
            user_type=draw(st.sampled_from(["Member", "Guest", None])), department=draw(VALUES),
            office_location=draw(st.sampled_from(["Oslo", "oslo ", None])), account_enabled=True,
            group_ids=frozenset(draw(st.lists(st.sampled_from(["g1", "g2", "G2"]), max_size=2))),
            input_hash=base64.b64encode(f"fingerprint {i}".encode()).decode(),
        ))
    return users


@settings(max_examples=300, deadline=None)
@given(users=settled_users(), sections=st.tuples(SECTION, SECTION, SECTION, SECTION, SECTION),
       excluded=st.sets(st.integers(0, 7)))
def test_settled_users_count_as_reconcile_decides_them(
    users: list[MirrorUser], sections: tuple[Any, ...], excluded: set[int],
) -> None:
    filters = Filters(**dict(zip(("user_types", "domains", "office_locations", "departments", "groups"),
                                 sections, strict=True)))
    org = msgspec.structs.replace(ORG, filters=filters, excluded=frozenset(
        u.id for i, u in enumerate(users) if i in excluded))
    org_hash = org_inputs_hash(org.sku_names, org.assets)
    linked = {u.id: msgspec.structs.replace(written_from(u, inputs=input_hash(u, org_hash)), id=f"eu-{u.id}")
              for u in users}
    in_scope = compile_filters(filters)

    decided = Tally()
    decided.add(reconcile(users, org=org, linked=linked, by_email={}), users, in_scope=in_scope)
    settled = Tally()
    settled.settle([_scoped(u) for u in users], in_scope=in_scope, excluded=org.excluded)
    settled.fill({u.id: (u.display_name, f"eu-{u.id}") for u in users if u.id in settled.wanted()})

    assert (settled.matching, settled.counts, settled.samples) == (decided.matching, decided.counts,
                                                                    decided.samples)


def _scoped(u: MirrorUser) -> ScopedUser:
    return ScopedUser(id=u.id, user_type=u.user_type, department=u.department, office_location=u.office_location,
                      mail=u.mail, user_principal_name=u.user_principal_name, removed=u.removed,
                      account_enabled=u.account_enabled, group_ids=u.group_ids)


@settings(max_examples=300, deadline=None)
@given(users=settled_users(), sections=st.tuples(SECTION, SECTION, SECTION, SECTION, SECTION),
       left=st.lists(st.tuples(st.sampled_from([None, "deleted", "absent"]), st.sampled_from([True, False, None])),
                     min_size=8, max_size=8),
       excluded=st.sets(st.integers(0, 7)))
def test_users_without_an_end_user_the_filters_leave_out_count_as_reconcile_decides_them(
    users: list[MirrorUser], sections: tuple[Any, ...], left: list[tuple[Any, Any]], excluded: set[int],
) -> None:
    filters = Filters(**dict(zip(("user_types", "domains", "office_locations", "departments", "groups"),
                                 sections, strict=True)))
    org = msgspec.structs.replace(ORG, filters=filters, excluded=frozenset(
        u.id for i, u in enumerate(users) if i in excluded))
    in_scope = compile_filters(filters)
    users = [msgspec.structs.replace(u, removed=removed, account_enabled=enabled)
             for u, (removed, enabled) in zip(users, left, strict=False)]
    # What the preview reads narrowly of users without an End User: those the filters leave out, or who left.
    narrow = [u for u in users if not (_scoped(u).active() and in_scope(u))]

    decided = Tally()
    decided.add(reconcile(narrow, org=org, linked={}, by_email={}), narrow, in_scope=in_scope)
    counted = Tally()
    counted.leave([_scoped(u) for u in narrow], in_scope=in_scope)

    assert (counted.matching, counted.counts, counted.samples) == (decided.matching, decided.counts,
                                                                    decided.samples)
    assert all((_scoped(u).active()) == (leaver_reason(u) is None) for u in users)
