"""The committed JSON Schema files match the message types, and messages survive a round trip."""

import json
from importlib import resources

import msgspec
import pytest

from schemas import messages
from schemas.client_state import client_state_for, verify_client_state


@pytest.mark.parametrize("name,schema", sorted(messages.json_schemas().items()))
def test_committed_json_schema_is_current(name: str, schema: dict[str, object]) -> None:
    committed = json.loads(resources.files("schemas").joinpath("json", name).read_text())
    assert committed == schema, f"regenerate with: python -m schemas.generate ({name} is stale)"


def test_command_round_trip_and_unknown_fields_are_ignored() -> None:
    cmd = messages.Command(command="org-sync", tenant_id="t", organization_id="o", requested_at="now")
    raw = json.loads(messages.encode(cmd))
    raw["added_in_v2"] = True
    assert messages.decode(json.dumps(raw).encode(), messages.Command) == cmd


@pytest.mark.parametrize("bad", [b"{}", b"not json", b'{"v":1,"command":"explode","tenant_id":"t","requested_at":"x"}'])
def test_bad_messages_raise(bad: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        messages.decode(bad, messages.Command)


@pytest.mark.parametrize(
    "tenant,state_tenant,secrets,ok",
    [
        ("t1", "t1", ["s"], True),
        ("T1", "t1", ["s"], True),            # tenant ids compare case-insensitively
        ("t1", "t2", ["s"], False),           # a notification cannot claim another tenant
        ("t1", "t1", ["new", "s"], True),     # previous secret still accepted during rotation
        ("t1", "t1", ["new"], False),
        ("t1", "t1", [""], False),
    ],
)
def test_client_state(tenant: str, state_tenant: str, secrets: list[str], ok: bool) -> None:
    assert verify_client_state(tenant, client_state_for(state_tenant, "s"), secrets) is ok
    assert len(client_state_for(tenant, "s")) <= 128
