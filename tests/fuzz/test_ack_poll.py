"""Hostile ack files through the real poller into a real local dropzone (contract §3 and §4).

Hypothesis writes a mix of files into a fresh ack dir: random bytes, random
JSON, and acks for a few SENT exports with hostile fields (NUL, lone
surrogates, huge numbers, deep nesting, long strings, wrong types, BOMs,
duplicate keys, non-finite numbers, oversize files). Each file carries what
the contract says must become of it, worked out here from how it was made,
not from parse_ack(). Then one forced poll, and:

- the poll never fails, and every ack/error file is in processed/ or failed/,
  byte for byte; files with other names stay where they are, untouched;
- every filed file has an event naming it, and each one in failed/ an error;
- the first valid answer (in name order) of an export is what the database
  holds; exports without one are unchanged.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connectors.contract.acks import ACK_MAX_BYTES, ACK_MAX_DEPTH, ERP_ORDER_NUMBER_MAX
from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.services.tenancy import local_root_of
from orderflow.models import DraftOrder, DraftOrderLine

EXPORTS = 3
BOM = b"\xef\xbb\xbf"
# Names the poller must leave alone (not read, not moved): not ack_/error_*.json, or not text.  (An answer's name
# with a control character is filed to failed/ with the reason: tests/security/test_smaller_walls.py.)
IGNORED_NAMES = [b"readme.txt", b"ack_x.json.tmp", b"ack_.json", b"ACK_x.json", b"error_x.JSON",
                 b"ack_\xff\xfe.json", b"error_caf\xe9.json"]

ANY_CHAR = st.characters(codec=None, exclude_categories=())
NAME_CHAR = st.characters(codec="utf-8", exclude_categories=("Cc",), exclude_characters="/\\")
HOSTILE_TEXT = st.one_of(st.text(ANY_CHAR, max_size=20), st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\ufeff", "é", "\u202e", "[[[{{{", '"\\"', "\n"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    HOSTILE_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=10)
WRONG_TYPES = st.sampled_from([0, 1.5, True, [], ["x"], {}, {"a": 1}])
KNOWN_FIELDS = {"export_id", "export_filename", "status", "erp_order_number", "message", "errors"}


@dataclass
class Planned:
    """One file and what the contract says must become of it."""

    name: str
    data: bytes
    target: int | None = None  # the export (index) it answers if valid and matched
    kind: str = ""
    breaks: list[str] = field(default_factory=list)  # why it is unusable; empty: a valid answer
    matched: bool = False

    @property
    def valid(self) -> bool:
        return self.target is not None and not self.breaks

    def body(self) -> dict[str, Any]:
        return json.loads(self.data.removeprefix(BOM))


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


def _number_text(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


@st.composite
def answer(draw: st.DrawFn, index: int, target: int, export: dict[str, str], name_key_free: bool) -> Planned:
    """An ack_/error_ file meant for ``export``, with zero or more hostile changes."""
    kind = draw(st.sampled_from(["ack", "error"]))
    plan = Planned(name="", data=b"", target=target, kind=kind)
    body: dict[str, Any] = {"export_id": export["id"], "export_filename": export["filename"]}
    if kind == "ack":
        body.update(status="accepted", erp_order_number=draw(st.sampled_from(["SO-1", "SO-ÄÖ-7", " SO 9 "])),
                    message="imported")
    else:
        body.update(status="rejected", errors=[{"code": "UNKNOWN_SKU", "message": "not in the item master",
                                                "line_number": 1}])
    by_name = False
    # In a fixed order, so that no later change undoes what an earlier one said about the file.
    for change in sorted(draw(st.lists(st.sampled_from(CHANGES), max_size=3, unique=True)), key=CHANGES.index):
        if change == "match_by_name":
            by_name = name_key_free
            if by_name:
                body.pop("export_id", None), body.pop("export_filename", None)
        else:
            _CHANGE_FUNCS[change](draw, plan, body)
    name_key = export["filename"].removesuffix(".json") if by_name else \
        f"{index:02d}{draw(st.text(NAME_CHAR, max_size=12))}"
    plan.name = f"{kind}_{name_key}.json"
    if len(plan.name.encode()) > 255:
        plan.name = f"{kind}_{index:02d}.json"
    # Contract §3: by export_id if present, else by export_filename, else by the file name.
    if body.get("export_id") is not None:
        plan.matched = str(body["export_id"]).lower() == export["id"]
    elif body.get("export_filename") is not None:
        plan.matched = body["export_filename"] == export["filename"]
    else:
        plan.matched = by_name
    plan.data = _serialize(draw, plan, body)
    return plan


def _serialize(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> bytes:
    # ensure_ascii=True writes a lone surrogate as "\ud800" (valid JSON text); False would not encode.
    text = json.dumps(body, ensure_ascii=draw(st.booleans()) or not _encodable(body), indent=draw(
        st.none() | st.just(1)))
    raw = draw(st.sampled_from(["plain", "plain", "bom", "duplicate_key", "inf_literal", "long_int_literal",
                                "huge_int_literal", "trailing_space", "oversize"]))
    if raw == "duplicate_key":
        text = '{"status": "x", ' + text[1:] if text.startswith("{") else text
        plan.breaks.append("duplicate key")
    elif raw in ("inf_literal", "long_int_literal", "huge_int_literal"):
        literal = {"inf_literal": "-1e400", "long_int_literal": "7" * 4300, "huge_int_literal": "7" * 4301}[raw]
        text = '{"extra_number": ' + literal + ", " + text[1:]
        if raw != "long_int_literal":
            plan.breaks.append("a number Python/JSON cannot hold")
    elif raw == "trailing_space":
        text += " \n\t"
    elif raw == "oversize":
        pad = draw(st.integers(ACK_MAX_BYTES - len(text) - 200, ACK_MAX_BYTES - len(text) + 200))
        text = '{"pad": "' + "p" * max(pad, 0) + '", ' + text[1:]
    if not _storable(json.loads(json.dumps(body))):  # as read back: "\\ud800\\udc00" is one valid character
        plan.breaks.append("NUL or unpaired surrogate")
    data = text.encode("utf-8")
    if raw == "bom":
        data = BOM + data
    if len(data) > ACK_MAX_BYTES:
        plan.breaks.append("over 1 MiB")
    return data


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _hostile_text(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    key = draw(st.sampled_from(["message", "extra", "erp_order_number", "export_filename", "errors"]))
    bad = draw(st.sampled_from(["\x00", "\ud800", "\udc80"]))
    text = draw(st.text(max_size=5)) + bad + draw(st.text(max_size=5))
    if key == "errors":
        body["errors"] = [{"message": text}]
    elif key == "extra" and draw(st.booleans()):
        body[text] = "as a key"
    else:
        body[key] = text  # judged unstorable in _serialize, on the text as the poller reads it


def _order_number(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    value = draw(st.one_of(
        st.integers(-(10 ** 300), 10 ** 300), st.integers(0, 10 ** 20),
        st.integers(250, 260).map(lambda n: "9" * n), st.text(NAME_CHAR, min_size=1, max_size=30),
        st.sampled_from(["", "   ", "SO\n1", "SO\x7f1", True, 1.5, [], {}])))
    body["erp_order_number"] = value
    if isinstance(value, bool) or not isinstance(value, int | str):
        plan.breaks.append("erp_order_number of a wrong type")
        return
    text = _number_text(value)
    if not text.strip() or len(text) > ERP_ORDER_NUMBER_MAX or any(ord(c) < 32 or ord(c) == 127 for c in text):
        plan.breaks.append("erp_order_number blank, too long or with a control character")


def _deep(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    depth = draw(st.integers(1, 3 * ACK_MAX_DEPTH))
    body["deep"] = _nested(depth)
    if 1 + depth > ACK_MAX_DEPTH:  # the ack object itself is the first level
        plan.breaks.append("nested too deep")


def _long_strings(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    size = draw(st.integers(1000, 200_000))
    body["message"] = "m" * size
    body["x" * draw(st.integers(1, 5000))] = "a long key"


def _wrong_type(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    key = draw(st.sampled_from(["export_id", "export_filename", "status", "message", "errors"]))
    value = draw(WRONG_TYPES)
    if key == "errors" and isinstance(value, list) and not value:
        value = ["not an object"]  # [] is a valid (empty) list of errors
    body[key] = value
    plan.breaks.append(f"{key} of a wrong type")


def _status(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    body["status"] = draw(st.sampled_from([None, "accepted", "rejected", "ok", "ACCEPTED"]))
    if (plan.kind == "ack") != (body["status"] == "accepted"):  # an error_ file may say anything else
        plan.breaks.append("status contradicts the file name")


def _extras(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    # Unknown keys are kept whatever they hold (storability is judged in _serialize).
    extra = draw(st.dictionaries(HOSTILE_TEXT.filter(lambda k: k not in KNOWN_FIELDS), JSON_VALUES, max_size=4))
    body.update(extra)


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value and _encodable(value)
    if isinstance(value, list):
        return all(map(_storable, value))
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return True


def _ids(draw: st.DrawFn, plan: Planned, body: dict[str, Any]) -> None:
    choice = draw(st.sampled_from(["upper", "filename_only", "other_export", "not_a_uuid", "empty_filename",
                                   "nulls"]))
    if choice == "upper" and "export_id" in body:
        body["export_id"] = body["export_id"].upper()
    elif choice == "filename_only":
        body.pop("export_id", None)
    elif choice == "other_export":
        body["export_id"] = str(uuid.uuid4())  # valid, but no export of ours: unmatched
    elif choice == "not_a_uuid":
        body["export_id"] = str(uuid.uuid4())[:-1] + "g"
        plan.breaks.append("export_id is not a UUID")
    elif choice == "empty_filename":
        body["export_filename"] = ""
        plan.breaks.append("empty export_filename")
    else:
        body["message"] = None  # null counts as absent
        body["export_filename"] = None


_CHANGE_FUNCS: dict[str, Callable[[st.DrawFn, Planned, dict[str, Any]], None]] = {
    "hostile_text": _hostile_text, "order_number": _order_number, "deep": _deep, "long_strings": _long_strings,
    "wrong_type": _wrong_type, "status": _status, "extras": _extras, "ids": _ids,
}
CHANGES = ["match_by_name", "ids", "order_number", "status", "extras", "long_strings", "deep", "wrong_type",
           "hostile_text"]
assert set(CHANGES) == {*_CHANGE_FUNCS, "match_by_name"}


@st.composite
def junk(draw: st.DrawFn, index: int) -> Planned:
    """Random bytes or random JSON under an ack name: never a usable answer to one of our exports."""
    kind = draw(st.sampled_from(["ack", "error"]))
    if draw(st.booleans()):
        data = draw(st.binary(max_size=300))
    else:
        data = json.dumps(draw(JSON_VALUES)).encode()
    if draw(st.booleans()):
        data = BOM + data
    return Planned(name=f"{kind}_{index:02d}junk{draw(st.text(NAME_CHAR, max_size=8))}.json", data=data, kind=kind)


@st.composite
def dropzone_files(draw: st.DrawFn, exports: list[dict[str, str]]) -> list[Planned]:
    plans: list[Planned] = []
    for index in range(draw(st.integers(1, 8))):
        target = draw(st.integers(0, len(exports) - 1))
        if draw(st.integers(0, 3)) == 0:
            plans.append(draw(junk(index)))
        else:  # several answers for one export are common: the first (by name) must win
            plans.append(draw(answer(index, target, exports[target],
                                     name_key_free=all(p.target != target for p in plans))))
    return plans


# -- the world: fresh rows and a fresh dropzone per example ----------------------------------------

def _fresh_world(org, root: Path, make_draft) -> tuple[ERPConnection, list[ERPExport], Path]:
    ConnectorEvent.objects.all().delete()
    ERPExport.objects.all().delete()
    DraftOrderLine.objects.all().delete()
    DraftOrder.objects.all().delete()
    ERPConnection.objects.all().delete()
    zone = root / f"zone-{uuid.uuid4().hex[:12]}"
    for sub in ("inbound", "outbound"):
        (zone / sub).mkdir(parents=True)
    relative = "/" + str(zone.relative_to(root))
    conn = ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True,
                                        export_path=f"{relative}/inbound", ack_path=f"{relative}/outbound",
                                        min_ack_age_seconds=0)
    exports = []
    for n in range(EXPORTS):
        draft = make_draft(order_number=f"PO-{n}", status=DraftOrder.Status.PUSHED)
        export = ERPExport.objects.create(draft=draft, connection=conn, status="SENT", sent_at=timezone.now())
        export.filename = f"20261126T120501Z_acme_PO-{n}_{str(export.id)[:8]}.json"
        export.save()
        DraftOrder.objects.filter(pk=draft.pk).update(erp_order_id=export.filename)
        exports.append(export)
    return conn, exports, zone / "outbound"


def _write(directory: Path, name: str | bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(directory), os.fsencode(name))
    with open(path, "wb") as fh:
        fh.write(data)
    old = timezone.now().timestamp() - 3600
    os.utime(path, (old, old))


def _listing(directory: Path) -> dict[bytes, bytes]:
    if not directory.is_dir():
        return {}
    base = os.fsencode(directory)
    return {n: Path(os.fsdecode(os.path.join(base, n))).read_bytes() for n in os.listdir(base)
            if os.path.isfile(os.path.join(base, n))}


def _events_naming(name: str) -> list[ConnectorEvent]:
    return [e for e in ConnectorEvent.objects.all()
            if (e.details or {}).get("file") == name or name in e.message]


def _check_database(plans: list[Planned], exports: list[ERPExport]) -> None:
    for n, export in enumerate(exports):
        export.refresh_from_db()
        draft = DraftOrder.objects.get(pk=export.draft_id)
        winner = next((p for p in sorted(plans, key=lambda p: p.name) if p.valid and p.matched and p.target == n),
                      None)
        if winner is None:
            assert (export.status, draft.status, export.ack_body) == ("SENT", "PUSHED", None), export
            assert draft.erp_order_id == export.filename
            continue
        body = winner.body()
        assert export.ack_body == body
        if winner.kind == "ack":
            number = _number_text(body["erp_order_number"])
            assert (export.status, draft.status) == ("ACKED", "CONFIRMED")
            assert export.erp_order_number == number and draft.erp_order_id == number
        else:
            assert (export.status, draft.status) == ("REJECTED", "REJECTED")
            assert export.errors == (body.get("errors") or [{"message": body.get("message") or "rejected"}])
            assert draft.erp_order_id == export.filename  # unchanged by a rejection


@pytest.fixture
def world(org, tmp_path, make_draft):
    return lambda: _fresh_world(org, local_root_of(org), make_draft)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_every_ack_file_is_filed_recorded_and_applied_as_the_contract_says(world, data) -> None:
    conn, exports, outbound = world()
    described = [{"id": str(e.id), "filename": e.filename} for e in exports]
    plans = data.draw(dropzone_files(described), label="files")
    ignored = data.draw(st.lists(st.sampled_from(IGNORED_NAMES), unique=True, max_size=2), label="ignored")
    for plan in plans:
        _write(outbound, plan.name, plan.data)
        event("valid" if plan.valid else "broken" if plan.breaks else "junk")
    for name in ignored:
        _write(outbound, name, b'{"status": "accepted", "erp_order_number": "SO-1"}')

    report = polling.poll_connection(connection=ERPConnection.objects.get(pk=conn.pk), force=True)

    assert report is not None and report.error == "", report
    assert sum(report.outcomes.values()) == len(plans), report.outcomes
    left, processed, failed = (_listing(d) for d in (outbound, outbound / "processed", outbound / "failed"))
    assert set(left) == set(ignored)  # only the files that are not ours to read
    filed = {**processed, **failed}
    assert len(filed) == len(plans) and not set(processed) & set(failed)
    for plan in plans:
        key = os.fsencode(plan.name)
        assert filed.get(key) == plan.data, f"{plan.name!r} lost or changed"
        should_fail = not (plan.valid and plan.matched)
        assert (key in failed) == should_fail, (plan.name, plan.breaks, plan.matched)
        events = _events_naming(plan.name)
        assert events, f"no event names {plan.name!r}"
        if should_fail:
            assert any(e.level == "error" and e.message for e in events), (plan.name, events)
    _check_database(plans, exports)


# -- found by the tests above, kept as plain regressions -----------------------------------------


def test_unterminated_strings_do_not_make_the_depth_scan_quadratic(world) -> None:
    # '"\"\"\"…': the old string pattern rescanned to the end from every quote
    # (close to an hour for a 1 MiB file, while the poll holds its claim).
    conn, _exports, outbound = world()
    _write(outbound, "ack_slow.json", b'"' + b'\\"' * 100_000)
    started = timezone.now()
    report = polling.poll_connection(connection=conn, force=True)
    assert report.outcomes == {"malformed": 1}
    assert (timezone.now() - started).total_seconds() < 5


@pytest.mark.parametrize(("literal", "why"), [("9" * 256, "over the 255"), ("-1e400", "not valid JSON")])
def test_numbers_the_database_cannot_hold_send_the_file_to_failed(world, literal: str, why: str) -> None:
    conn, exports, outbound = world()
    body = f'{{"export_id": "{exports[0].id}", "status": "accepted", "erp_order_number": {literal}}}'
    if literal.startswith("-1e"):
        body = f'{{"export_id": "{exports[0].id}", "status": "accepted", "erp_order_number": 1, "x": {literal}}}'
    _write(outbound, "ack_number.json", body.encode())
    assert polling.poll_connection(connection=conn, force=True).outcomes == {"malformed": 1}
    exports[0].refresh_from_db()
    assert exports[0].status == "SENT" and why in ConnectorEvent.objects.get(kind="ack_malformed").message


def test_a_name_that_is_not_utf8_does_not_stop_the_poll(world) -> None:
    # os.scandir gives b"ack_\xff.json" as "ack_\udcff.json"; the database refused it and every poll crashed.
    conn, exports, outbound = world()
    _write(outbound, b"ack_\xff.json", b"{}")
    _write(outbound, f"error_{exports[0].filename}", json.dumps({"export_id": str(exports[0].id)}).encode())
    report = polling.poll_connection(connection=conn, force=True)
    assert report.error == "" and report.outcomes == {"rejected": 1}
    assert b"ack_\xff.json" in os.listdir(os.fsencode(outbound))  # left alone, like any name not ours


def test_two_answers_of_one_kind_in_one_poll_first_wins(world) -> None:
    # Fixed in answers.py (7289123) while this was written: the last one used to win, both "accepted".
    conn, exports, outbound = world()
    for name, number in (("ack_1.json", "SO-FIRST"), ("ack_2.json", "SO-SECOND")):
        body = {"export_id": str(exports[0].id), "status": "accepted", "erp_order_number": number}
        _write(outbound, name, json.dumps(body).encode())
    report = polling.poll_connection(connection=conn, force=True)
    exports[0].refresh_from_db()
    assert report.outcomes == {"accepted": 1, "duplicate": 1}, report.outcomes
    assert exports[0].erp_order_number == "SO-FIRST"


# -- found by the fuzzing -----------------------------------------------------------------------


def test_a_long_name_that_collides_is_still_filed(world) -> None:
    conn, _exports, outbound = world()
    name = "ack_" + "x" * (255 - len("ack_.json")) + ".json"
    (outbound / "failed").mkdir()
    (outbound / "failed" / name).write_bytes(b"an older file of that name")
    _write(outbound, name, b"not json")
    polling.poll_connection(connection=conn, force=True)
    assert not (outbound / name).exists()
