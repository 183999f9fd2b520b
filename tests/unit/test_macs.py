"""MAC address normalisation: every accepted notation, and the junk that must not match anything."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.macs import normalize_mac


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Matrix rows `(id, *values)` as named pytest params."""
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


MACS = [
    # id, input, expected
    ("colons-upper", "AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
    ("colons-lower", "0a:1b:2c:3d:4e:5f", "0a1b2c3d4e5f"),
    ("dashes-lower", "aa-bb-cc-dd-ee-01", "aabbccddee01"),
    ("dashes-upper", "AA-BB-CC-DD-EE-01", "aabbccddee01"),
    ("bare-upper", "AABBCCDDEE02", "aabbccddee02"),
    ("bare-lower", "aabbccddee02", "aabbccddee02"),
    ("dotted", "aabb.ccdd.ee03", "aabbccddee03"),
    ("dotted-upper", "AABB.CCDD.EE03", "aabbccddee03"),
    ("surrounding-whitespace", "  AA:BB:CC:DD:EE:04\n", "aabbccddee04"),
    ("none", None, None),
    ("empty", "", None),
    ("blank", "   ", None),
    ("all-zero", "00:00:00:00:00:00", None),
    ("all-zero-bare", "000000000000", None),
    ("broadcast", "FF-FF-FF-FF-FF-FF", None),
    ("mixed-separators", "aa:bb-cc:dd:ee:ff", None),
    ("too-short", "aa:bb:cc:dd:ee", None),
    ("too-long", "aabbccddeeff00", None),
    ("non-hex", "gg:bb:cc:dd:ee:ff", None),
    ("single-digit-octets", "a:b:c:d:e:f", None),
    ("dotted-wrong-groups", "aabbcc.ddeeff", None),
    ("inner-space", "aa bb cc dd ee ff", None),
    ("trailing-separator", "aa:bb:cc:dd:ee:ff:", None),
    ("words", "unknown", None),
]


@pytest.mark.parametrize(("raw", "expected"), table(MACS))
def test_normalize_mac(raw: str | None, expected: str | None) -> None:
    assert normalize_mac(raw) == expected
