"""The user properties are declared once (`worker.core.model.UserProperties`): Graph's `$select`, the decoding of
Graph's user pages, the mirror's columns and rows and `MirrorUser` all follow that declaration. The round trip
through PostgreSQL is tests/integration/test_user_properties_mirror.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import msgspec

from worker.core.directory import AssignedLicense, GraphUser, Removed
from worker.core.model import USER_PROPERTIES, MirrorUser, UserProperties
from worker.graph import USER_SELECT, UserPage
from worker.store import mirror


def _wire_names() -> dict[str, str]:
    return dict(zip(GraphUser.__struct_fields__, GraphUser.__struct_encode_fields__, strict=True))


def _graph_user_json() -> dict[str, object]:
    """A Graph user with a distinct value in every declared property, spelt as Graph spells it."""
    wire, values = _wire_names(), {}
    for name in USER_PROPERTIES:
        field = next(f for f in msgspec.structs.fields(UserProperties) if f.name == name)
        if "bool" in str(field.type):
            values[wire[name]] = True
        elif "tuple" in str(field.type):
            values[wire[name]] = [f"{name}-0", f"{name}-1"]
        else:
            values[wire[name]] = f"{name}-value"
    return {"id": "u-1", **values, "assignedLicenses": [{"skuId": "sku-b"}, {"skuId": "sku-a"}]}


def test_select_names_every_declared_property_as_graph_spells_it() -> None:
    wire = _wire_names()
    assert USER_SELECT.split(",") == ["id", *(wire[p] for p in USER_PROPERTIES), "assignedLicenses"]
    assert "jobTitle" in USER_SELECT.split(",") and "officeLocation" in USER_SELECT.split(",")  # camelCase


def test_a_page_decodes_every_declared_property_into_its_mirror_column() -> None:
    raw = _graph_user_json()
    (user,) = msgspec.json.decode(json.dumps({"value": [raw]}).encode(), type=UserPage).value
    wire = _wire_names()
    record = dict(zip(mirror.MIRROR_COLUMNS, mirror._mirror_record("t-1", user), strict=True))
    for name in USER_PROPERTIES:
        expected = raw[wire[name]]
        assert getattr(user, name) == expected, name
        assert record[name] == expected, name
    assert (record["tenant_id"], record["id"], record["assigned_licenses"]) == ("t-1", "u-1", ["sku-a", "sku-b"])
    assert mirror.MIRROR_COLUMNS[2:-3] == USER_PROPERTIES  # between the key and what the mirror derives


def test_mirror_users_carry_every_declared_property_and_the_store_reads_each_column() -> None:
    assert MirrorUser.__struct_fields__[: len(USER_PROPERTIES) + 1] == ("id", *USER_PROPERTIES)
    row_sql = mirror.full_row("'{}'")
    for name in USER_PROPERTIES:
        assert f"u.{name}" in row_sql, name


def test_the_content_hash_of_a_mirror_row_is_what_it_was() -> None:
    """Rows already in a mirror keep matching: a user that did not change is not rewritten after an upgrade.
    The digest was computed by the explicit property list this declaration replaced."""
    user = GraphUser(id="u-1", display_name="Ann Lee", given_name="Ann", surname="Lee", mail="ann@x.test",
                     user_principal_name="ann@x.test", business_phones=["+1 555 0100"], job_title="Engineer",
                     department="R&D", office_location="Oslo", user_type="Member", account_enabled=True,
                     assigned_licenses=[AssignedLicense(sku_id="sku-a")])
    assert mirror._mirror_record("t-1", user)[-1].hex() == "018ba3e0af0661c6e66aa6a53ebdcf2d"
    gone = msgspec.structs.replace(user, removed=Removed(reason="changed"))
    assert mirror._mirror_record("t-1", gone)[-1] != mirror._mirror_record("t-1", user)[-1]


def test_adding_a_synced_property_is_one_edit_of_the_declaration() -> None:
    """A field added to `UserProperties` (and nothing else) reaches Graph's $select, the decoding, the mirror's
    columns and row, and MirrorUser. Run in a fresh interpreter with the declaration edited in memory."""
    script = textwrap.dedent('''
        import json, sys, types, pathlib
        import worker.core
        path = pathlib.Path(worker.core.__file__).with_name("model.py")
        anchor = "    account_enabled: bool | None = None\\n"
        source = path.read_text()
        assert source.count(anchor) == 1, "the declaration's last property moved: update this test's anchor"
        source = source.replace(anchor, anchor + "    employee_id: str | None = None\\n")
        model = types.ModuleType("worker.core.model")
        model.__file__ = str(path)
        sys.modules["worker.core.model"] = model
        exec(compile(source, str(path), "exec"), model.__dict__)
        import msgspec
        from worker.graph import USER_SELECT, UserPage
        from worker.core.model import MirrorUser
        from worker.store import mirror
        page = b'{"value": [{"id": "u-1", "employeeId": "E-42", "jobTitle": "Engineer"}]}'
        (user,) = msgspec.json.decode(page, type=UserPage).value
        record = dict(zip(mirror.MIRROR_COLUMNS, mirror._mirror_record("t-1", user)))
        print(json.dumps({
            "select": USER_SELECT.split(","), "columns": list(mirror.MIRROR_COLUMNS),
            "decoded": user.employee_id, "record": record["employee_id"],
            "mirror_user": "employee_id" in MirrorUser.__struct_fields__,
            "mirror_sql": "u.employee_id" in mirror.full_row("'{}'"),
        }))
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["select"][-3:] == ["accountEnabled", "employeeId", "assignedLicenses"]
    assert seen["columns"][-5:] == ["account_enabled", "employee_id", "assigned_licenses", "removed", "content_hash"]
    assert (seen["decoded"], seen["record"]) == ("E-42", "E-42")
    assert seen["mirror_user"] and seen["mirror_sql"]


def test_the_content_hash_leaves_out_the_key() -> None:
    a = GraphUser(id="a", mail="x@y.test")
    assert mirror._mirror_record("t", a)[-1] == mirror._mirror_record("t2", GraphUser(id="b", mail="x@y.test"))[-1]
    assert mirror._mirror_record("t", a)[-1] != mirror._mirror_record("t", GraphUser(id="a", mail="z@y.test"))[-1]
