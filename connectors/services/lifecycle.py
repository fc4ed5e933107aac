"""The one writer of ``ERPExport.status`` and ``DraftOrder.status``.

Every status change is a *verb* from the table below.  A verb is one
transaction: it locks the drafts, then the exports (always in that order, so
verbs never deadlock each other), checks each export against the verb's rule
(source states, the delivery claim, "is it the draft's current export?"),
writes both rows with compare-and-set updates, records the events and returns
a typed :class:`Result` per export.

A draft follows only its **current** export (its newest).  Its status is a
function of that export's status (:data:`DRAFT_STATUS`); answers and faults of
older exports are recorded on them and never move the draft.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from orderflow.models import DraftOrder, DraftOrderLine

from ..models import ConnectorEvent, ERPExport
from .events import EventSpec, event_statements, record_events
from .rowwrites import Keep, Statement, run_statements, update_statements

S = ERPExport.Status
D = DraftOrder.Status

#: What a draft shows while this is its current export.
DRAFT_STATUS: dict[str, str] = {
    S.PENDING: D.APPROVED,
    S.SENT: D.PUSHED,
    S.ACKED: D.CONFIRMED,
    S.REJECTED: D.REJECTED,
    S.FAILED: D.PUSH_FAILED,
    S.CANCELLED: D.NEW,
}
#: Exports whose file may be (or is) in the ERP's hands and that have no answer yet.
AWAITING_ANSWER = (S.SENT,)
ANSWERED = (S.ACKED, S.REJECTED)


class Verb(StrEnum):
    DELIVERED = "delivered"  # the file is in the dropzone, verified
    RETRY_LATER = "retry_later"  # a fault that may heal: back off (status stays PENDING)
    DELIVERY_FAILED = "delivery_failed"  # permanent fault or retry budget spent
    ACCEPTED = "accepted"  # an ack_ file
    REJECTED = "rejected"  # an error_ file
    RETRY = "retry"  # staff: send the same export again
    CANCEL = "cancel"  # staff: withdraw an undelivered export
    MANUAL_ACCEPT = "manual_accept"  # staff: the ERP confirmed out of band
    MANUAL_REJECT = "manual_reject"  # staff: the ERP rejected out of band


@dataclass(frozen=True)
class Rule:
    sources: frozenset[str]
    target: str
    claimed: bool = False  # the caller must hold the delivery claim (its token)
    unclaimed: bool = False  # refused while a delivery worker holds the export
    current_only: bool = False  # only the draft's current export
    never_sent: bool = False  # only an export that never reached the dropzone
    level: str = ConnectorEvent.Level.INFO


_UNDELIVERED = frozenset({S.PENDING, S.FAILED})
_OPEN = frozenset({S.PENDING, S.SENT, S.FAILED})

#: The declared table of allowed export transitions; the draft follows via DRAFT_STATUS.
TRANSITIONS: dict[Verb, Rule] = {
    Verb.DELIVERED: Rule(frozenset({S.PENDING}), S.SENT, claimed=True),
    Verb.RETRY_LATER: Rule(frozenset({S.PENDING}), S.PENDING, claimed=True, level=ConnectorEvent.Level.WARNING),
    Verb.DELIVERY_FAILED: Rule(frozenset({S.PENDING}), S.FAILED, claimed=True, level=ConnectorEvent.Level.ERROR),
    # An answer may beat our own SENT mark (a fast ERP), or come for an export we gave up on
    # whose file had landed after all: it is recorded whatever the claim says.
    Verb.ACCEPTED: Rule(_OPEN, S.ACKED),
    Verb.REJECTED: Rule(_OPEN, S.REJECTED, level=ConnectorEvent.Level.WARNING),
    Verb.RETRY: Rule(_UNDELIVERED, S.PENDING, current_only=True, never_sent=True),
    Verb.CANCEL: Rule(_UNDELIVERED, S.CANCELLED, unclaimed=True, never_sent=True,
                      level=ConnectorEvent.Level.WARNING),
    Verb.MANUAL_ACCEPT: Rule(_OPEN, S.ACKED, unclaimed=True, level=ConnectorEvent.Level.WARNING),
    Verb.MANUAL_REJECT: Rule(_OPEN, S.REJECTED, unclaimed=True, level=ConnectorEvent.Level.WARNING),
}


class Outcome(StrEnum):
    DONE = "done"
    WRONG_STATE = "wrong_state"  # not a source state of the verb (e.g. already answered)
    NOT_CURRENT = "not_current"  # an older export: the draft follows a newer one
    CLAIM_LOST = "claim_lost"  # our delivery claim expired and someone else holds it
    CLAIMED = "claimed"  # a delivery worker holds it right now
    ALREADY_SENT = "already_sent"  # it reached the dropzone once: not "undelivered"
    MISSING = "missing"  # no such export


@dataclass(frozen=True)
class Result:
    export_id: uuid.UUID
    outcome: Outcome
    status: str = ""  # the export's status afterwards
    draft_moved: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.DONE


@dataclass
class Change:
    """One export's part in a verb: what to write besides the status, and what to tell."""

    export_id: uuid.UUID
    fields: dict[str, Any] = field(default_factory=dict)  # more export columns
    draft_id: uuid.UUID | None = None  # the export's draft, when the caller has it (it never changes): a query less
    draft_fields: dict[str, Any] = field(default_factory=dict)  # more draft columns, if current
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


_REFUSALS = {
    Outcome.WRONG_STATE: "its status is {status}",
    Outcome.NOT_CURRENT: "a newer export of the same draft exists",
    Outcome.CLAIM_LOST: "the delivery claim was taken over by another worker",
    Outcome.CLAIMED: "a worker is delivering it right now; try again in a minute",
    Outcome.ALREADY_SENT: "it reached the dropzone already",
}


def refusal(result: Result) -> str:
    """Why a verb left this export alone, for staff."""
    return _REFUSALS.get(result.outcome, result.outcome.value).format(status=result.status or "gone")


def newest_export() -> Subquery:
    """A draft's current export: its newest (by the ``export_current_by_draft`` index)."""
    return Subquery(ERPExport.objects.filter(draft_id=OuterRef("pk")).order_by("-created_at").values("pk")[:1])


def current_export_ids(draft_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """draft id -> its current (newest) export id."""
    rows = (DraftOrder.objects.filter(pk__in=list(draft_ids)).annotate(current=newest_export())
            .values_list("pk", "current"))
    return {draft_id: export_id for draft_id, export_id in rows if export_id is not None}


def _check(rule: Rule, row: dict[str, Any], *, token: uuid.UUID | None, is_current: bool,
           now: Any) -> Outcome:
    if row["status"] not in rule.sources:
        return Outcome.WRONG_STATE
    if rule.claimed and row["claim_token"] != token:
        return Outcome.CLAIM_LOST
    held_by_other = (row["claim_token"] not in (None, token) and row["claimed_until"] is not None
                     and row["claimed_until"] > now)
    if rule.unclaimed and held_by_other and row["status"] == S.PENDING:
        return Outcome.CLAIMED
    if rule.never_sent and row["sent_at"] is not None:
        return Outcome.ALREADY_SENT
    if rule.current_only and not is_current:
        return Outcome.NOT_CURRENT
    return Outcome.DONE


def transition(verb: Verb, changes: Sequence[Change], *, token: uuid.UUID | None = None,
               actor: str = "", kind: str | None = None) -> list[Result]:
    """Apply ``verb`` to each export of ``changes``; one transaction, one Result per change (same order)."""
    rule = TRANSITIONS[verb]
    if not changes:
        return []
    by_id = {c.export_id: c for c in changes}
    if len(by_id) != len(changes):
        raise ValueError(f"{verb}: one change per export")  # callers decide which of two answers counts
    now = timezone.now()
    with transaction.atomic():
        draft_ids = {c.draft_id for c in changes}
        if None in draft_ids:
            draft_ids = set(ERPExport.objects.filter(pk__in=list(by_id)).values_list("draft_id", flat=True))
        drafts, current = {}, {}
        for draft_id, status, newest in (DraftOrder.objects.select_for_update(of=("self",)).filter(pk__in=draft_ids)
                                         .order_by("pk").annotate(current=newest_export())
                                         .values_list("pk", "status", "current")):
            drafts[draft_id], current[draft_id] = status, newest
        rows = {r["pk"]: r for r in ERPExport.objects.select_for_update().filter(pk__in=list(by_id)).order_by("pk")
                .values("pk", "draft_id", "connection_id", "status", "claim_token", "claimed_until", "sent_at")}
        if any(c.draft_id not in (None, rows[c.export_id]["draft_id"]) for c in changes if c.export_id in rows):
            raise ValueError(f"{verb}: a change names another draft than its export's")  # its draft was not locked
        results: dict[uuid.UUID, Result] = {}
        export_rows: dict[uuid.UUID, dict[str, Any]] = {}
        draft_rows: dict[uuid.UUID, dict[str, Any]] = {}
        events: list[EventSpec] = []
        for export_id, change in by_id.items():
            row = rows.get(export_id)
            if row is None:
                results[export_id] = Result(export_id, Outcome.MISSING)
                continue
            is_current = current.get(row["draft_id"]) == export_id
            outcome = _check(rule, row, token=token, is_current=is_current, now=now)
            if outcome != Outcome.DONE:
                results[export_id] = Result(export_id, outcome, status=row["status"])
                continue
            export_rows[export_id] = {"status": rule.target, "updated_at": now, **change.fields}
            moved = is_current and drafts.get(row["draft_id"]) is not None
            if moved:
                draft_rows[row["draft_id"]] = {"status": DRAFT_STATUS[rule.target], "updated_at": now,
                                               **change.draft_fields}
            results[export_id] = Result(export_id, Outcome.DONE, status=rule.target, draft_moved=moved)
            level = rule.level if is_current else ConnectorEvent.Level.WARNING
            message = change.message if is_current else (
                f"{change.message} (an older export: the draft follows a newer one and was not changed)")
            events.append(EventSpec(kind=kind or verb.value, message=message, export_id=export_id,
                                    connection_id=row["connection_id"], level=level, actor=actor,
                                    details=change.details))
        # Compare-and-set: the rows still say what we checked under the lock.  All writes go in one round.
        by_source: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}
        for export_id, values in export_rows.items():
            by_source.setdefault(rows[export_id]["status"], {})[export_id] = values
        statements: list[Statement] = []
        checks: list[tuple[int, int, int]] = []  # statements[start:end] must change this many export rows
        for source, group in by_source.items():
            where = {"status": source, **({"claim_token": token} if rule.claimed else {})}
            start = len(statements)
            statements += update_statements(ERPExport, group, where=where)
            checks.append((start, len(statements), len(group)))
        drafts_by_source: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}
        for draft_id, values in draft_rows.items():
            if drafts[draft_id] != values["status"] or len(values) > 2:  # more than status + updated_at
                drafts_by_source.setdefault(drafts[draft_id], {})[draft_id] = values
        for source, group in drafts_by_source.items():
            statements += update_statements(DraftOrder, group, where={"status": source})
        counts = run_statements(ERPExport, statements + event_statements(events))
        if any(sum(counts[start:end]) != n for start, end, n in checks):
            raise RuntimeError(f"{verb}: export rows changed under their lock")  # cannot happen: locked
    return [results[c.export_id] for c in changes]


# -- the changes the pipeline and staff verbs write --------------------------------


def release_claim_fields() -> dict[str, Any]:
    return {"claim_token": None, "claimed_until": None}


def delivered(export: ERPExport, *, note: str = "", now: Any = None) -> Change:
    """The file is in the dropzone, verified: SENT; the draft PUSHED with the file name."""
    return Change(export.pk, draft_id=export.draft_id,
                  fields={"sent_at": now or timezone.now(), "last_error": "", "next_attempt_at": None,
                          **release_claim_fields()},
                  draft_fields={"erp_order_id": export.filename}, message=f"Delivered {export.filename}{note}",
                  details={"sha256": export.payload_sha256, "size": export.payload_size})


def retry_later(export: ERPExport, *, error: str, next_attempt_at: Any, message: str) -> Change:
    return Change(export.pk, draft_id=export.draft_id,
                  fields={"last_error": error, "next_attempt_at": next_attempt_at, **release_claim_fields()},
                  message=message)


def delivery_failed(export: ERPExport, *, reason: str) -> Change:
    return Change(export.pk, draft_id=export.draft_id,
                  fields={"last_error": reason, "next_attempt_at": None, **release_claim_fields()},
                  message=f"Delivery of {export} failed: {reason}")


def answered(export_id: uuid.UUID, *, body: dict[str, Any], message: str, erp_order_number: str = "",
             errors: list | None = None, details: dict[str, Any] | None = None) -> Change:
    """An answer of the ERP (a file, or recorded by staff): accepted with a number, or rejected with errors."""
    now = timezone.now()
    fields: dict[str, Any] = {"ack_body": body, "acked_at": now, "sent_at": Keep(now), "next_attempt_at": None,
                              **release_claim_fields()}
    draft_fields: dict[str, Any] = {}
    if errors is None:
        fields["erp_order_number"] = erp_order_number
        draft_fields["erp_order_id"] = erp_order_number
    else:
        fields.update(errors=errors, last_error="; ".join(str(e.get("message", e)) for e in errors) or "rejected")
    return Change(export_id, fields=fields, draft_fields=draft_fields, message=message, details=details or {})


# -- push: a draft gets a new current export ------------------------------------

#: A draft may get a new export while its current one ended in these (or it has none).
REPUSHABLE = (S.FAILED, S.REJECTED, S.CANCELLED)
PUSH_CHUNK = 200


@dataclass
class PushCounts:
    done: int = 0
    skipped: int = 0
    waiting: int = 0  # of done: no active connection yet, the export waits for one
    connection_ids: set[int] = field(default_factory=set)  # where the new exports go: the caller wakes them


def _open_exports(drafts: Sequence[DraftOrder], *, actor: str, counts: PushCounts) -> None:
    """New PENDING exports (the drafts' current ones) on each organization's active connection.

    They are due at once; ``counts.connection_ids`` names the connections they go through.
    """
    from ..models import ERPConnection

    org_ids = {d.organization_id for d in drafts}
    active = dict(ERPConnection.objects.filter(organization_id__in=org_ids, is_active=True)
                  .values_list("organization_id", "pk"))
    now = timezone.now()
    exports = ERPExport.objects.bulk_create([
        ERPExport(draft=d, connection_id=active.get(d.organization_id), next_attempt_at=now) for d in drafts
    ])
    events = []
    who = f"{actor} pushed" if actor else "Approved:"
    for draft, export in zip(drafts, exports, strict=True):
        if export.connection_id is None:
            counts.waiting += 1
            events.append(EventSpec(kind="export_waiting", export_id=export.pk, actor=actor,
                                    level=ConnectorEvent.Level.WARNING,
                                    message=f"{who} {draft.order_number}; no active ERP connection for its "
                                            "organization: the export waits until one is activated"))
        else:
            events.append(EventSpec(kind="export_created", export_id=export.pk, connection_id=export.connection_id,
                                    actor=actor, message=f"{who} {draft.order_number}; export "
                                                         f"{str(export.pk)[:8]} queued"))
    record_events(events)
    counts.connection_ids.update(e.connection_id for e in exports if e.connection_id is not None)


def _with_lines() -> Q:
    return Q(Exists(DraftOrderLine.objects.filter(draft=OuterRef("pk"))))


def push(*, draft_ids: Iterable[uuid.UUID], actor: str = "") -> PushCounts:
    """Staff "Push to ERP": New, Push failed or Rejected drafts with lines become APPROVED with a new export.

    Each chunk is one transaction: the drafts' status and their new exports
    commit together or not at all.  Others are counted as skipped.
    """
    ids = list(dict.fromkeys(draft_ids))
    counts = PushCounts()
    for start in range(0, len(ids), PUSH_CHUNK):
        chunk = ids[start:start + PUSH_CHUNK]
        with transaction.atomic():
            drafts = list(DraftOrder.objects.select_for_update().filter(pk__in=chunk).order_by("pk"))
            pushable = list(DraftOrder.objects.filter(_with_lines(), pk__in=chunk, status__in=DraftOrder.PUSHABLE)
                            .order_by("pk"))
            counts.skipped += len(drafts) - len(pushable) + (len(chunk) - len(drafts))
            if not pushable:
                continue
            DraftOrder.objects.filter(pk__in=[d.pk for d in pushable], status__in=DraftOrder.PUSHABLE).update(
                status=D.APPROVED, updated_at=timezone.now())
            _open_exports(pushable, actor=actor, counts=counts)
            counts.done += len(pushable)
    return counts


def approve_saved(*, draft_id: uuid.UUID) -> PushCounts:
    """A draft was saved as APPROVED by code outside this module (the post_save signal, the sweep).

    Decided from the database, not from what the instance was loaded with:
    no open export → one is created (the approval pushes: ``done`` is 1); an
    open one → nothing; a delivered or answered one → the save was stale, and
    the draft's status is restored from its current export (``skipped`` is 1).
    """
    counts = PushCounts()
    with transaction.atomic():
        draft = DraftOrder.objects.select_for_update().filter(pk=draft_id, status=D.APPROVED).first()
        if draft is None:
            return counts
        current = draft.exports.order_by("-created_at").first()
        if current is not None and current.status == S.PENDING:
            return counts
        if current is None or current.status in REPUSHABLE:
            if DraftOrder.objects.filter(_with_lines(), pk=draft.pk).exists():
                _open_exports([draft], actor="", counts=counts)
                counts.done = 1
                return counts
            restored = DRAFT_STATUS[current.status] if current else D.NEW
            message = f"{draft.order_number} was approved without lines; status set back to {restored}"
        else:
            restored = DRAFT_STATUS[current.status]
            message = (f"{draft.order_number} was saved as APPROVED over {restored} (a stale save); "
                       f"status restored from its current export {str(current.pk)[:8]}")
        DraftOrder.objects.filter(pk=draft.pk, status=D.APPROVED).update(status=restored, updated_at=timezone.now())
        record_events([EventSpec(kind="draft_status_restored", message=message,
                                 export_id=current.pk if current else None,
                                 connection_id=current.connection_id if current else None,
                                 level=ConnectorEvent.Level.WARNING)])
        counts.skipped = 1
        return counts


def approved_without_open_export(limit: int = 200) -> list[uuid.UUID]:
    """Drafts APPROVED with no PENDING export: a push that committed halfway outside this module."""
    return list(DraftOrder.objects.filter(status=D.APPROVED).exclude(exports__status=S.PENDING)
                .values_list("pk", flat=True)[:limit])
