"""Signed, stateless console sessions and the CSRF token bound to each.

A cookie is `kind.issued.nonce.mac`: `kind` is `a` (a visitor about to sign in) or `s` (signed in), `issued`
a Unix time, `nonce` random, `mac` an HMAC-SHA256 of the rest under a key derived from the admin token — so
rotating the admin token signs everyone out, and nothing is stored server-side. The CSRF token is an HMAC of
the nonce: a page's forms carry it, a POST must return it, and a cross-site page can neither read the cookie
(HttpOnly, SameSite=Strict) nor compute the token. Signing in issues a fresh nonce (no session fixation).
Pure apart from the clock and the random source passed in by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "console_session"
SESSION_TTL_S = 12 * 3600  # a working day; then sign in again
VISITOR_TTL_S = 3600


@dataclass(frozen=True)
class Session:
    signed_in: bool
    issued: int
    nonce: str


class SessionKeys:
    """Signs and checks cookies and CSRF tokens under a key derived from the admin token."""

    def __init__(self, admin_token: str) -> None:
        self._admin = admin_token.encode()
        self._key = hmac.new(self._admin, b"entra-sync console session v1", hashlib.sha256).digest()

    def token_matches(self, given: str) -> bool:
        """The admin token check of the sign-in form (constant time)."""
        return bool(self._admin) and hmac.compare_digest(given.encode(), self._admin)

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def new(self, *, signed_in: bool, now: float) -> tuple[Session, str]:
        """A fresh session and its cookie value."""
        session = Session(signed_in=signed_in, issued=int(now), nonce=secrets.token_urlsafe(18))
        payload = f"{'s' if signed_in else 'a'}.{session.issued}.{session.nonce}"
        return session, f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str | None, *, now: float) -> Session | None:
        """The session a cookie carries, or None when it is missing, forged or expired."""
        if not cookie or cookie.count(".") != 3:
            return None
        payload, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        kind, issued_text, nonce = payload.split(".")
        if kind not in ("a", "s") or not issued_text.isdigit():
            return None
        issued = int(issued_text)
        ttl = SESSION_TTL_S if kind == "s" else VISITOR_TTL_S
        if not issued <= now + 60 or now - issued > ttl:
            return None
        return Session(signed_in=kind == "s", issued=issued, nonce=nonce)

    def csrf(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf." + session.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(session))
