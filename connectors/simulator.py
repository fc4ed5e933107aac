"""An ERP on the far side of a dropzone: reads export files, answers them as dropzone JSON v1 §2-§3 says.

For developers, tests, benchmarks and ERP integrators (docs/erp-simulator.md). No Django here:
:func:`check_export` is pure (file name + bytes -> answer) and :class:`ERPSimulator` works on an
open :class:`~connectors.transports.Transport` and plain values; ``manage.py simulate_erp`` is
the thin shell around it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from .contract import payloads
from .contract.acks import no_duplicate_keys
from .transports import LISTING_LIMIT, ErrorCode, RemoteFile, Transport, TransportError

EXPORT_MAX_BYTES = 8 * 1024 * 1024  # far above any real order; bounds what one file can cost us
MAX_FILES_PER_PASS = 500
ANSWER_NAME_MAX_BYTES = 255  # what common filesystems and servers accept for one name
ACCEPTED, REJECTED, INVALID = "accepted", "rejected", "invalid"
_BOM = b"\xef\xbb\xbf"
# §2: parts are sanitized to [A-Za-z0-9._-], so "_" only ever separates them.
_NAME = re.compile(r"(?P<time>\d{8}T\d{6}Z)_(?P<org>[A-Za-z0-9.-]+)_(?P<order>[A-Za-z0-9.-]+)"
                   r"_(?P<short>[0-9a-f]{8})\.json")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Answer:
    """What the simulated ERP says about one export file: the answer file's name, its body, and why."""

    outcome: str  # ACCEPTED, REJECTED (unknown SKUs) or INVALID (the file breaks the contract)
    file_name: str  # ack_<stem>.json or error_<stem>.json
    body: dict[str, Any]
    reason: str  # one line for the operator


def erp_order_number(export_id: str) -> str:
    """The simulated ERP's order number: ``SO-`` + 8 digits, the same for the same export every time."""
    digest = hashlib.sha256(export_id.lower().encode("utf-8")).hexdigest()
    return f"SO-{int(digest, 16) % 10**8:08d}"


def answer_name(export_name: str, *, accepted: bool) -> str:
    """``ack_<export name without .json>.json`` or ``error_<…>.json`` (§3's convention)."""
    return f"{'ack' if accepted else 'error'}_{export_name.removesuffix('.json')}.json"


def render_answer(body: dict[str, Any]) -> bytes:
    """An answer file's bytes: UTF-8 JSON, indented, ``\\n`` at the end (as orderflow writes its own)."""
    return (json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


_UNREADABLE = object()  # not a JSON value at all (None is JSON's null)


def _decode(data: bytes) -> tuple[Any, list[str]]:
    """(JSON value or _UNREADABLE, what breaks §2's encoding).

    Problems that still leave the bytes readable (a BOM, no final newline, float numbers) are
    collected and reading goes on, so the answer can carry the export_id orderflow matches by.
    """
    problems = []
    if data.startswith(_BOM):
        problems.append("starts with a UTF-8 byte order mark (BOM); the contract says UTF-8 without BOM")
        data = data[len(_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return _UNREADABLE, [*problems, f"not UTF-8: invalid byte at offset {err.start}"]
    if not text.endswith("\n"):
        problems.append("does not end with a newline (\\n)")
    numbers: list[str] = []

    def number(token: str) -> str:  # §2 writes money and quantities as strings; keep the token for the reason
        numbers.append(token)
        return token

    try:
        value = json.loads(text, object_pairs_hook=no_duplicate_keys, parse_float=number, parse_constant=number)
    except RecursionError:
        return _UNREADABLE, [*problems, "not valid JSON: nested too deeply"]
    except ValueError as err:  # JSONDecodeError, duplicate keys
        return _UNREADABLE, [*problems, f"not valid JSON: {err}"]
    if numbers:
        problems.append(f"holds the number {numbers[0][:40]}; the contract writes decimals as strings (\"0.12\")")
    return value, problems


def _name_problems(name: str) -> list[str]:
    match = _NAME.fullmatch(name)
    if match is None:
        return [f"file name {name!r} is not {{utc:%Y%m%dT%H%M%SZ}}_{{org_slug}}_{{order_number}}_"
                "{export_id[:8]}.json"]
    problems = []
    if len(name.encode("utf-8")) > payloads.NAME_MAX_BYTES:
        problems.append(f"file name is longer than {payloads.NAME_MAX_BYTES} bytes")
    try:
        datetime.strptime(match["time"], "%Y%m%dT%H%M%SZ")
    except ValueError:
        problems.append(f"file name time {match['time']!r} is not a real UTC instant")
    for part in ("org", "order"):
        if payloads.sanitize_order_number(match[part]) != match[part]:
            problems.append(f"file name part {match[part]!r} is not reduced as §2 says")
    return problems


def _expected_parts(document: dict[str, Any]) -> tuple[str, str] | None:
    """(org part, order part) of the name orderflow gives this document, or None if it cannot say."""
    try:
        name = payloads.export_filename(
            generated_at=datetime.now(UTC), org_slug=document["organization"]["slug"],
            order_number=document["order"]["order_number"], export_id=UUID(document["export_id"]))
    except (KeyError, TypeError, ValueError):  # PayloadError is a ValueError
        return None
    _time, org, order, _short = name.split("_")
    return org, order


def _agreement_problems(name: str, document: dict[str, Any], *, mapped: bool) -> list[str]:
    match = _NAME.fullmatch(name)
    export_id = document.get("export_id")
    if match is None or not isinstance(export_id, str):
        return []
    problems = []
    if match["short"] != export_id[:8]:
        problems.append(f"file name ends in {match['short']!r} but export_id starts with {export_id[:8]!r}")
    expected = None if mapped else _expected_parts(document)  # a mapping may rename or drop these keys
    if expected is not None:
        if match["org"] != expected[0]:
            problems.append(f"file name has org {match['org']!r} but the document's slug gives {expected[0]!r}")
        if match["order"] != expected[1]:
            problems.append(f"file name has order number {match['order']!r} but the document's gives {expected[1]!r}")
    return problems


def _key(mapping: dict[str, Any], path: str, default: str) -> str | None:
    """The name the key at v1 ``path`` has after the mapping (None: dropped)."""
    if path in (mapping.get("drop") or []):
        return None
    return (mapping.get("rename") or {}).get(path, default)


def _lines(document: dict[str, Any], mapping: dict[str, Any]) -> list[tuple[int, Any]] | None:
    """(line number, sku) of every line, found through the mapping's renames; None where they are gone."""
    order_key, lines_key = _key(mapping, "order", "order"), _key(mapping, "order.lines", "lines")
    sku_key = _key(mapping, "order.lines[].sku", "sku")
    number_key = _key(mapping, "order.lines[].line_number", "line_number")
    order = document.get(order_key) if order_key else None
    lines = order.get(lines_key) if isinstance(order, dict) and lines_key else None
    if not isinstance(lines, list) or sku_key is None:
        return None
    found = []
    for index, line in enumerate(lines, start=1):
        if isinstance(line, dict):
            number = line.get(number_key) if number_key else None
            usable = isinstance(number, int) and not isinstance(number, bool)
            found.append((number if usable else index, line.get(sku_key)))
    return found


def _invalid(name: str, problems: list[str], document: Any) -> Answer:
    body: dict[str, Any] = {}
    export_id = document.get("export_id") if isinstance(document, dict) else None
    if isinstance(export_id, str) and _UUID.fullmatch(export_id):  # else orderflow could not read the answer
        body["export_id"] = export_id
    body.update(export_filename=name, status="rejected", message="the file breaks dropzone JSON v1",
                errors=[{"code": "INVALID_FILE", "message": problem[:1000]} for problem in problems])
    return Answer(INVALID, answer_name(name, accepted=False), body, "; ".join(problems))


def check_export(name: str, data: bytes, *, reject_skus: frozenset[str] = frozenset(),
                 mapping: dict[str, Any] | None = None) -> Answer:
    """Check one export file against §2 and decide the answer.

    Without a mapping the document must pass the shipped JSON Schema and agree with its file name
    (export_id prefix, org slug, order number). With a non-empty ``mapping`` the schema cannot apply:
    the file must still be one JSON object with a UUID ``export_id`` that agrees with the name, and
    lines are looked up through the mapping's renames. Every line whose sku is in ``reject_skus``
    becomes an UNKNOWN_SKU error; a file that breaks the contract gets INVALID_FILE errors.
    """
    mapping = mapping or {}
    document, problems = _decode(data)
    if not isinstance(document, dict):
        if document is not _UNREADABLE:
            problems.append("the file is valid JSON but not one JSON object")
        return _invalid(name, problems + _name_problems(name), None)
    if mapping:
        export_id = document.get("export_id")
        if not isinstance(export_id, str) or not _UUID.fullmatch(export_id):
            problems.append("mapped document has no export_id holding a lowercase UUID string")
    else:
        try:
            payloads.validate_document(document)
        except payloads.PayloadError as err:
            problems.append(str(err))
    problems += _name_problems(name) + _agreement_problems(name, document, mapped=bool(mapping))
    if problems:
        return _invalid(name, problems, document)

    export_id = document["export_id"]
    note = " (mapped document: schema check skipped)" if mapping else ""
    lines = _lines(document, mapping)
    if lines is None and reject_skus:
        note += " (no order lines found: --reject-sku not applied)"
    unknown = [(number, sku) for number, sku in lines or [] if isinstance(sku, str) and sku in reject_skus]
    if unknown:
        errors = [{"code": "UNKNOWN_SKU", "message": f"{sku} is not in the item master", "line_number": number}
                  for number, sku in unknown]
        body = {"export_id": export_id, "export_filename": name, "status": "rejected",
                "message": f"{len(errors)} line(s) with an unknown SKU", "errors": errors}
        reason = ", ".join(f"line {number}: UNKNOWN_SKU {sku}" for number, sku in unknown)
        return Answer(REJECTED, answer_name(name, accepted=False), body, reason + note)
    number = erp_order_number(export_id)
    body = {"export_id": export_id, "export_filename": name, "status": "accepted",
            "erp_order_number": number, "message": "imported by the orderflow ERP simulator"}
    return Answer(ACCEPTED, answer_name(name, accepted=True), body, number + note)


# -- running against a dropzone ----------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorSettings:
    """Where the simulated ERP reads and answers, and how it behaves (plain values)."""

    export_dir: str
    ack_dir: str
    temp_suffix: str = ".tmp"
    reject_skus: frozenset[str] = frozenset()
    mapping: dict[str, Any] | None = None
    delay: float = 0.0  # answer a file only once it has been seen this many seconds
    max_files: int = MAX_FILES_PER_PASS

    def __post_init__(self) -> None:
        # One dir for both would make the simulator answer its own answers.
        if posixpath.normpath(self.export_dir) == posixpath.normpath(self.ack_dir):
            raise ValueError("the export dir and the ack dir are the same directory")


@dataclass(frozen=True)
class FileResult:
    name: str
    outcome: str  # accepted, rejected, invalid, exists, waiting, vanished, skipped
    detail: str = ""
    answer: str = ""

    def __str__(self) -> str:
        target = f" -> {self.answer}" if self.answer and self.outcome in (ACCEPTED, REJECTED, INVALID) else ""
        return f"{self.outcome:<9} {self.name}{target}" + (f": {self.detail}" if self.detail else "")


@dataclass
class PassReport:
    results: list[FileResult] = field(default_factory=list)
    ignored: int = 0  # temp files, dot-files, anything not *.json
    more: bool = False  # the pass stopped at max_files; the rest waits for the next pass

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.outcome for r in self.results)

    def summary(self) -> str:
        counts = self.counts
        order = (ACCEPTED, REJECTED, INVALID, "exists", "waiting", "vanished", "skipped")
        text = ", ".join(f"{counts[o]} {o}" for o in order if counts[o] or o in (ACCEPTED, REJECTED, INVALID))
        text += f"; {self.ignored} other file(s) ignored"
        return text + ("; more files wait for the next pass" if self.more else "")


class ERPSimulator:
    """Answers the export files of one dropzone; remembers across passes when it first saw each file."""

    def __init__(self, settings: SimulatorSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._first_seen: dict[str, float] = {}

    def _candidates(self, transport: Transport) -> tuple[list[RemoteFile], int]:
        """Export files oldest first, and how many other files were left alone."""
        files = transport.list_dir(self.settings.export_dir, limit=LISTING_LIMIT)  # the rest in the next pass
        # Never a temp file (orderflow is still writing it) nor a dot-file (orderflow's connection probe).
        taken = [f for f in files if f.name.endswith(".json") and not f.name.startswith(".")
                 and not f.name.endswith(self.settings.temp_suffix)]
        return sorted(taken, key=lambda f: (f.mtime or 0, f.name)), len(files) - len(taken)

    def _note(self, files: list[RemoteFile]) -> float:
        """Start the --delay clock of new files, forget vanished ones; returns now."""
        now = self._clock()
        self._first_seen = {f.name: self._first_seen.get(f.name, now) for f in files}
        return now

    def observe(self, transport: Transport) -> int:
        """Note the export files present now (their --delay starts); returns how many there are."""
        files, _ignored = self._candidates(transport)
        self._note(files)
        return len(files)

    def run_pass(self, transport: Transport) -> PassReport:
        """List, check and answer up to ``max_files`` export files; TransportError if the dropzone fails."""
        files, ignored = self._candidates(transport)
        report = PassReport(ignored=ignored)
        answered = {f.name for f in transport.list_dir(self.settings.ack_dir, limit=LISTING_LIMIT)}
        now = self._note(files)
        handled = 0
        for item in files:
            seen = now - self._first_seen[item.name]
            if seen < self.settings.delay:
                report.results.append(FileResult(item.name, "waiting", f"seen {seen:.1f} s ago, answered after "
                                                 f"{self.settings.delay:g} s"))
            elif handled >= self.settings.max_files:
                report.more = True
            else:
                handled += 1
                report.results.append(self._answer(transport, item, answered))
        return report

    def _answer(self, transport: Transport, item: RemoteFile, answered: set[str]) -> FileResult:
        name = item.name
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name) or "\\" in name:
            return FileResult(name, "skipped", "the name holds a control character or backslash; not answered")
        if len(answer_name(name, accepted=False).encode("utf-8")) > ANSWER_NAME_MAX_BYTES:
            return FileResult(name, "skipped", "the name is too long to answer; not answered")
        existing = [n for n in (answer_name(name, accepted=True), answer_name(name, accepted=False)) if n in answered]
        if existing:
            return FileResult(name, "exists", f"{existing[0]} is already in the ack dir; export file left in place")
        path = transport.join(self.settings.export_dir, name)
        try:
            data = transport.read_file(path, max_bytes=EXPORT_MAX_BYTES)
        except TransportError as err:
            if err.code == ErrorCode.NOT_FOUND:  # someone else took it since the listing
                return FileResult(name, "vanished", "gone since the listing")
            if err.code != ErrorCode.TOO_LARGE:
                if not err.permanent:  # the connection is failing: stop the pass
                    raise
                # This one file cannot be read (permission, a symlink the local jail refuses): only it is affected.
                return FileResult(name, "skipped", f"cannot be read ({err.message}); left in place")
            answer = _invalid(name, [f"the file is larger than the simulator's {EXPORT_MAX_BYTES} byte limit"], None)
        else:
            answer = check_export(name, data, reject_skus=self.settings.reject_skus, mapping=self.settings.mapping)
        try:
            transport.put_atomic(self.settings.ack_dir, answer.file_name, render_answer(answer.body))
        except TransportError as err:
            if err.code != ErrorCode.EXISTS:
                raise
            return FileResult(name, "exists", f"{answer.file_name} appeared in the ack dir meanwhile; "
                              "not overwritten, export file left in place")
        detail = answer.reason
        try:
            transport.remove(path)  # consumed: a rerun must not answer it twice
        except TransportError as err:
            if err.code != ErrorCode.NOT_FOUND:
                detail += f" (answered, but the export file could not be removed: {err.message})"
        return FileResult(name, answer.outcome, detail, answer.file_name)
