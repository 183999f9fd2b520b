"""Text PostgreSQL cannot store, removed at the boundary (pure).

PostgreSQL's `text` refuses U+0000, and a lone UTF-16 surrogate (U+D800 to U+DFFF, which JSON's `\\ud800` escape
can carry) cannot be encoded as UTF-8 at all (msgspec refuses to decode it). Graph returns both when a directory
value holds them; rather than fail a tenant's whole unit of work, such values are stored without those
characters and counted as warnings: `json_without_lone_surrogates` turns a lone surrogate's escape into
`\\u0000` before decoding, and `scrub` then removes every U+0000 from the decoded struct, naming the fields.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In raw JSON these characters can only arrive as escapes (msgspec refuses invalid UTF-8), so a page without
# these byte patterns needs no look at its values (a valid surrogate pair also matches: a false alarm only).
_ESCAPES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


# An escape preceded by an even number of backslashes (a real escape, not an escaped backslash): a surrogate
# pair (kept), or a lone surrogate (replaced).
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def json_without_lone_surrogates(raw_json: bytes) -> bytes:
    """The document with each lone surrogate escape replaced by `\\u0000` (same length), valid pairs kept."""
    def repl(match: re.Match[bytes]) -> bytes:
        escape = match.group(2)
        return match.group(1) + (escape if len(escape) == 12 else b"\\u0000")

    return _SURROGATE_ESCAPE.sub(repl, raw_json)


def may_hold_unstorable(raw_json: bytes) -> bool:
    """Whether a JSON document may decode to text PostgreSQL cannot store (cheap, on the raw bytes)."""
    return _ESCAPES.search(raw_json) is not None


def storable(value: str) -> str:
    """`value` without U+0000 and lone surrogates."""
    return _UNSTORABLE.sub("", value)


def scrub(obj: Any, path: str = "") -> list[str]:
    """Remove unstorable characters from every string in a msgspec Struct (its lists and nested Structs
    included), in place; returns the paths of the values changed (`jobTitle`, `businessPhones[0]`, …)."""
    changed: list[str] = []
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        where = f"{path}{_encoded_name(obj, name)}"
        if isinstance(value, str):
            clean = storable(value)
            if clean != value:
                setattr(obj, name, clean)
                changed.append(where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    clean = storable(item)
                    if clean != item:
                        value[i] = clean
                        changed.append(f"{where}[{i}]")
                elif isinstance(item, msgspec.Struct):
                    changed += scrub(item, f"{where}[{i}].")
        elif isinstance(value, msgspec.Struct):
            changed += scrub(value, f"{where}.")
    return changed


def _encoded_name(obj: msgspec.Struct, name: str) -> str:
    """The field's name as Graph spells it (`jobTitle`, not `job_title`)."""
    encoded = getattr(type(obj), "__struct_encode_fields__", None)
    if encoded is None:
        return name
    return str(encoded[obj.__struct_fields__.index(name)])


def unstorable_warnings(values: list[str], *, shown: int = 10) -> list[str]:
    """A run's warning for values stored without unstorable characters ("<id> <field>" each), or none."""
    if not values:
        return []
    listed = ", ".join(values[:shown]) + (f" and {len(values) - shown} more" if len(values) > shown else "")
    return [f"{len(values)} value(s) held characters PostgreSQL cannot store (U+0000 or lone surrogates) and "
            f"were stored without them: {listed}"]
