"""Apply the ERP's parsed ack/error files to exports: a chunk per transaction, each bad one isolated.

Matching (contract §3): by ``export_id`` when present (alone), else by
``export_filename``, else by the file name's ``<anything>`` part — among the
exports of the connection's organization, so an answer written into a new
connection's dropzone for an export sent through the old one still finds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import DatabaseError, transaction

from ..contract.acks import Ack
from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..services import lifecycle
from ..services.lifecycle import Outcome, Verb

#: Outcomes whose file goes to the failed dir (the rest go to processed).
TO_FAILED = frozenset({"malformed", "unmatched", "unappliable", "not_applicable"})
LEVELS = {"accepted": "info", "duplicate": "info", "vanished": "info", "rejected": "warning"}


@dataclass
class Handled:
    """What became of one file of the ack dir."""

    name: str
    outcome: str  # accepted, rejected, duplicate, not_applicable, unmatched, unappliable, malformed, vanished
    message: str
    export_id: uuid.UUID | None = None
    recorded: bool = False  # the lifecycle already wrote its event

    @property
    def level(self) -> str:
        return LEVELS.get(self.outcome, ConnectorEvent.Level.ERROR)


def _match(connection: ERPConnection, acks: Sequence[tuple[str, Ack]]) -> dict[str, ERPExport | None]:
    exports = ERPExport.objects.filter(draft__organization_id=connection.organization_id)
    ids = {a.export_id for _, a in acks if a.export_id is not None}
    names = {a.export_filename or f"{a.name_key}.json" for _, a in acks if a.export_id is None}
    by_id = {e.pk: e for e in exports.filter(pk__in=ids)} if ids else {}
    by_name = {e.filename: e for e in exports.filter(filename__in=names)} if names else {}
    return {name: by_id.get(a.export_id) if a.export_id is not None
            else by_name.get(a.export_filename or f"{a.name_key}.json") for name, a in acks}


def _change(name: str, ack: Ack, export: ERPExport) -> tuple[Verb, lifecycle.Change]:
    details = {"file": name}
    if ack.kind == "ack":
        number = ack.erp_order_number or ""
        return Verb.ACCEPTED, lifecycle.answered(export.pk, body=ack.body, erp_order_number=number, details=details,
                                                 message=f"{export} accepted by the ERP as {number} ({name})")
    errors = ack.errors or [{"message": ack.message or "rejected"}]
    reason = "; ".join(str(e.get("message", e)) for e in errors)
    return Verb.REJECTED, lifecycle.answered(export.pk, body=ack.body, errors=errors, details=details,
                                             message=f"{export} rejected by the ERP: {reason} ({name})")


def _outcome(name: str, verb: Verb, export: ERPExport, result: lifecycle.Result) -> Handled:
    if result.outcome == Outcome.DONE:
        return Handled(name, "accepted" if verb == Verb.ACCEPTED else "rejected", "", export.pk, recorded=True)
    if result.status in lifecycle.ANSWERED:
        return Handled(name, "duplicate", f"{name}: {export} was already answered ({result.status}); "
                                          "first answer kept", export.pk)
    if result.outcome == Outcome.MISSING:
        return Handled(name, "unmatched", f"{name} matches no export of this organization")
    return Handled(name, "not_applicable", f"{name}: {export} is {result.status}; the answer was not applied "
                                           "(it was cancelled by staff)", export.pk)


def _apply(verbs: dict[Verb, list[tuple[str, Ack, ERPExport]]]) -> list[Handled]:
    handled: list[Handled] = []
    for verb, items in verbs.items():
        changes = [_change(name, ack, export)[1] for name, ack, export in items]
        results = lifecycle.transition(verb, changes, kind=f"ack_{verb.value}")
        handled += [_outcome(name, verb, export, r) for (name, _a, export), r in zip(items, results, strict=True)]
    return handled


def apply_acks(*, connection: ERPConnection, acks: Sequence[tuple[str, Ack]]) -> list[Handled]:
    """Apply a chunk of parsed acks (file name, Ack); one Handled per ack, in order.

    The chunk is one transaction; if the database refuses it, each ack is
    applied on its own so the one it cannot hold is filed as ``unappliable``
    and the others still count.
    """
    matches = _match(connection, acks)
    verbs: dict[Verb, list[tuple[str, Ack, ERPExport]]] = {}
    by_name: dict[str, Handled] = {}
    first_for: dict[uuid.UUID, str] = {}
    for name, ack in acks:
        export = matches[name]
        if export is None:
            by_name[name] = Handled(name, "unmatched", f"{name} matches no export of this organization")
            continue
        if export.pk in first_for:  # two answers in one chunk: the first one wins, as across polls
            by_name[name] = Handled(name, "duplicate", f"{name}: {export} was already answered by "
                                                       f"{first_for[export.pk]}; first answer kept", export.pk)
            continue
        first_for[export.pk] = name
        verb, _change_ = _change(name, ack, export)
        verbs.setdefault(verb, []).append((name, ack, export))
    try:
        with transaction.atomic():
            applied = _apply(verbs)
    except DatabaseError:
        applied = []
        for verb, items in verbs.items():
            for item in items:
                try:
                    with transaction.atomic():
                        applied += _apply({verb: [item]})
                except DatabaseError as err:
                    applied.append(Handled(item[0], "unappliable", f"{item[0]}: the database refused this answer "
                                                                   f"({type(err).__name__}); nothing was changed",
                                           item[2].pk))
    by_name.update({h.name: h for h in applied})
    return [by_name[name] for name, _ in acks]
