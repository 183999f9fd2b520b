"""MAC address normalisation: the one notation Assets and managed devices are compared in.

Accepted: `AA:BB:CC:DD:EE:FF`, `aa-bb-cc-dd-ee-ff` (one separator used throughout), `AABBCCDDEEFF` and
Cisco's `aabb.ccdd.eeff`, any case, surrounding whitespace ignored. The result is 12 lowercase hex digits.
The all-zero and broadcast addresses are placeholders some devices report, not identities: matching on them
would link every such device to every such Asset, so they normalise to None like junk does.
Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

_HEX2: Final = "[0-9a-f]{2}"
_NOTATIONS: Final = re.compile(
    rf"{_HEX2}([:-]){_HEX2}(?:\1{_HEX2}){{4}}"     # aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff
    r"|[0-9a-f]{12}"                                # aabbccddeeff
    r"|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}"       # aabb.ccdd.eeff
)
_SEPARATORS: Final = str.maketrans("", "", ":-.")
_PLACEHOLDERS: Final = frozenset({"000000000000", "ffffffffffff"})


def normalize_mac(s: str | None) -> str | None:
    """12 lowercase hex digits for a MAC in a known notation; None for junk and placeholder addresses."""
    if not s:
        return None
    lowered = s.strip().lower()
    if _NOTATIONS.fullmatch(lowered) is None:
        return None
    mac = lowered.translate(_SEPARATORS)
    return None if mac in _PLACEHOLDERS else mac
