"""Alerts: one mail when a connection's problem starts, one when it ends, never a flood.

The conditions, per connection (:class:`AlertState.Condition`):

- ``delivery_failed``: exports FAILED that are still their draft's current one (ends when they are
  retried, cancelled or pushed again);
- ``host_key``: the server's host key or certificate is unknown or changed (``last_error_code``; ends when
  an operation works again, not when a timeout hides the key);
- ``ack_overdue``: exports SENT without an answer after ACK_OVERDUE_AFTER_MINUTES;
- ``poll_failing``: ALERT_POLL_FAILURES polls failed in a row (ends when one works);
- ``inbox_stale``: our files still in the ERP's inbox after ALERT_INBOX_STALE_MINUTES (it stopped consuming).

An inactive connection with nothing in flight has no conditions: whatever was on ends.

:func:`evaluate` decides from the database what changed and writes nothing.  :func:`check_connection`
applies each change to its AlertState row with a compare-and-set on ``version`` and sends the mail after
commit, so any number of clusters running the schedule at once send each mail once.  A mail is sent at
most once: if the mail server is down at that moment the mail is lost (logged and put on the
connection's timeline), never repeated.  Mails go to the organization's ``alert_emails`` and, in Bcc,
to ADMINS; every text that came from outside is clipped, and the connection's secrets are masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from orderflow.models import Organization

from ..crypto import reveal
from ..models import AlertState, ConnectorEvent, ERPConnection, ERPExport
from ..transports import ErrorCode
from .events import EventSpec, record_events
from .health import REASONS, stale_minutes
from .overrides import failed_exports

logger = logging.getLogger("connectors.alerts")

C = AlertState.Condition
S = ERPExport.Status
CONDITIONS: tuple[str, ...] = (C.DELIVERY_FAILED, C.HOST_KEY, C.ACK_OVERDUE, C.POLL_FAILING, C.INBOX_STALE)
HOST_KEY_CODES = {ErrorCode.HOST_KEY_UNKNOWN, ErrorCode.HOST_KEY_CHANGED}
FAULT_KINDS = ("delivery_failed", "poll_failed", "connection_test")  # events whose details.code names a fault
TEXT_LIMIT = 500  # characters of an outside text (an error, a file name) in a mail: the facts, not a dump
SECRET_MIN_LENGTH = 6  # shorter secrets are not masked: masking every "erp" would say what the password is
RUN_SECONDS = 50  # a run starts no connection after this (a slow mail server): the next minute's run goes on

Facts = dict[str, Any]  # what a mail tells about one condition; JSON-safe (stored on the AlertState)


@dataclass(frozen=True)
class Transition:
    """One condition of one connection that started or ended, decided on the AlertState ``version`` read."""

    connection_id: int
    condition: str
    started: bool  # False: it ended
    version: int
    facts: Facts
    since: datetime | None = None  # when it started (the "resolved" mail says how long it lasted)

    @property
    def title(self) -> str:
        return str(self.facts.get("title") or C(self.condition).label.lower())


# -- what is wrong now, per condition (each: connection, whether it is on -> facts, or None) ------------


def _delivery_failed(conn: ERPConnection, active: bool) -> Facts | None:
    failed = failed_exports(conn).select_related("draft")
    oldest, latest = failed.order_by("updated_at").first(), failed.order_by("-updated_at").first()
    if oldest is None or latest is None:
        return None
    return {"title": "deliveries failing", "count": failed.count(), "oldest": _export_line(oldest),
            "oldest_at": _when(oldest.updated_at), "last_error": _clip(latest.last_error),
            "link": _admin_url("connectors_erpexport_changelist", connection__id__exact=conn.pk,
                               status__exact=S.FAILED)}


def _host_key(conn: ERPConnection, active: bool) -> Facts | None:
    # Ends only when an operation works (""): a timeout met before the key is checked again proves nothing.
    code, what = conn.last_error_code, "certificate" if conn.transport == "ftps" else "host key"
    if code not in HOST_KEY_CODES:
        if not (active and code):
            return None
        return {"title": f"server {what} not trusted", "code": _clip(code, 40), "what": what,
                "reason": f"not checked again yet: the last operation failed before that ({_clip(code, 40)})",
                "event": "", "event_at": "", "link": _admin_url("connectors_erpconnection_change", conn.pk)}
    event = (ConnectorEvent.objects.filter(connection=conn, kind__in=FAULT_KINDS, details__code=code)
             .order_by("-created_at", "-id").first())
    return {"title": f"server {what} {'CHANGED' if code == ErrorCode.HOST_KEY_CHANGED else 'unknown'}",
            "code": code, "reason": REASONS[ErrorCode(code)], "what": what,
            "event": _clip(event.message) if event else "", "event_at": _when(event.created_at) if event else "",
            "link": _admin_url("connectors_erpconnection_change", conn.pk)}


def _ack_overdue(conn: ERPConnection, active: bool) -> Facts | None:
    overdue = ERPExport.objects.filter(connection=conn).ack_overdue()
    oldest = overdue.select_related("draft").order_by("sent_at").first()
    if oldest is None or oldest.sent_at is None:
        return None
    return {"title": "acks overdue", "count": overdue.count(), "minutes": settings.ACK_OVERDUE_AFTER_MINUTES,
            "oldest": _export_line(oldest), "oldest_at": _when(oldest.sent_at),
            "oldest_age": _age((timezone.now() - oldest.sent_at).total_seconds()),
            "link": _admin_url("connectors_erpexport_changelist", ack="overdue", connection__id__exact=conn.pk)}


def _poll_failing(conn: ERPConnection, active: bool) -> Facts | None:
    # Starts at the threshold, ends only when a poll works: a count wobbling around it never flaps.
    threshold = settings.ALERT_POLL_FAILURES
    if conn.poll_failures == 0 or (not active and conn.poll_failures < threshold):
        return None
    return {"title": "polling failing", "count": conn.poll_failures, "threshold": threshold,
            "last_poll_at": _when(conn.last_poll_at), "last_error": _clip(conn.last_poll_message),
            "code": _clip(conn.last_error_code, 40),
            "link": _admin_url("connectors_connectorevent_changelist", kind__exact="poll_failed",
                               connection__id__exact=conn.pk)}


def _inbox_stale(conn: ERPConnection, active: bool) -> Facts | None:
    now, limit = time.time(), 60 * stale_minutes()  # inbox_seen is by our clock, epoch seconds
    seen_at = conn.inbox_seen if isinstance(conn.inbox_seen, dict) else {}
    ages = {name: now - seen for name, seen in seen_at.items()
            if isinstance(seen, int | float) and not isinstance(seen, bool)}
    stale = {name: age for name, age in ages.items() if age > limit}
    if not stale or (not active and conn.last_poll_ok is False):
        return None  # after a failed poll the listing is old news: "polling failing" tells that story
    oldest = max(stale, key=lambda name: stale[name])
    return {"title": "the ERP stopped consuming files", "count": len(stale), "in_inbox": len(ages),
            "minutes": stale_minutes(), "folder": _clip(conn.export_path), "oldest": _clip(oldest),
            "oldest_age": _age(stale[oldest]),
            "link": _admin_url("connectors_erpexport_changelist", connection__id__exact=conn.pk,
                               status__exact=S.SENT)}


OBSERVERS: dict[str, Callable[[ERPConnection, bool], Facts | None]] = {
    C.DELIVERY_FAILED: _delivery_failed, C.HOST_KEY: _host_key, C.ACK_OVERDUE: _ack_overdue,
    C.POLL_FAILING: _poll_failing, C.INBOX_STALE: _inbox_stale,
}


def in_flight(conn: ERPConnection) -> bool:
    """Active, or still owed something (exports to deliver or answers to read): its problems still matter."""
    return conn.is_active or conn.exports.filter(status__in=(S.PENDING, S.SENT)).exists()


def observe(conn: ERPConnection, active: dict[str, bool] | None = None, *, flying: bool | None = None
            ) -> dict[str, Facts]:
    """The conditions present now -> their facts; ``active``: which are on (for the poll threshold)."""
    if not (in_flight(conn) if flying is None else flying):
        return {}
    found = {c: OBSERVERS[c](conn, (active or {}).get(c, False)) for c in CONDITIONS}
    return {c: facts for c, facts in found.items() if facts is not None}


def evaluate(connection: ERPConnection) -> list[Transition]:
    """What started and what ended on this connection since the AlertStates were written; writes nothing."""
    states = {s.condition: s for s in AlertState.objects.filter(connection=connection, condition__in=CONDITIONS)}
    flying = in_flight(connection)
    present = observe(connection, {c: s.active for c, s in states.items()}, flying=flying)
    transitions = []
    for condition in CONDITIONS:
        state = states.get(condition)
        on, version = (state.active, state.version) if state else (False, 0)
        if condition in present and not on:
            transitions.append(Transition(connection.pk, condition, True, version, present[condition]))
        elif on and condition not in present and state is not None:
            ended = {**state.details, "inactive": not flying}
            transitions.append(Transition(connection.pk, condition, False, version, ended, since=state.started_at))
    return transitions


# -- applying: compare-and-set on the state row, then one mail per change after commit ----------------


def check_connection(connection: ERPConnection) -> list[Transition]:
    """Evaluate one connection and apply its changes; returns those this run won (and mails after commit)."""
    transitions = evaluate(connection)
    if not transitions:
        return []
    _ensure_states(connection.pk, [t.condition for t in transitions])
    now = timezone.now()
    with transaction.atomic():
        won = [t for t in transitions if _apply(t, now)]
        mails = [(t, _alert_mail(connection, t, now)) for t in won]
        record_events([_sent_event(connection, t, mail) for t, mail in mails])
        outgoing = [mail for _t, mail in mails if mail is not None]
        if outgoing:
            transaction.on_commit(partial(_send, connection.pk, outgoing))
    return won


def _ensure_states(connection_id: int, conditions: Iterable[str]) -> None:
    # Racing runs both insert; the unique constraint keeps one row, and both then compare-and-set on it.
    AlertState.objects.bulk_create([AlertState(connection_id=connection_id, condition=c) for c in conditions],
                                   ignore_conflicts=True)


def _apply(t: Transition, now: datetime) -> bool:
    """Write the change only onto the version it was decided on: True for exactly one of racing runs."""
    fields: dict[str, Any] = {"active": t.started, "details": t.facts, "last_sent_at": now, "updated_at": now,
                              "version": F("version") + 1, "started_at" if t.started else "cleared_at": now}
    return AlertState.objects.filter(connection_id=t.connection_id, condition=t.condition,
                                     version=t.version).update(**fields) == 1


def _sent_event(conn: ERPConnection, t: Transition, mail: EmailMessage | None) -> EventSpec:
    what = f"{t.title}{'' if t.started else ' - resolved'}"
    message = (f"Alert mailed to {len(mail.recipients())} recipient(s): {what}" if mail else
               f"Alert not mailed (no recipients: set the organization's alert e-mails or ADMINS): {what}")
    return EventSpec(kind="alert_started" if t.started else "alert_resolved", connection_id=conn.pk,
                     level=ConnectorEvent.Level.WARNING if t.started else ConnectorEvent.Level.INFO,
                     message=message, details={"condition": t.condition})


def _send(connection_id: int, mails: list[EmailMessage]) -> None:
    """After commit: send each mail once; a failure is logged and put on the timeline, never raised."""
    problems: list[str] = []
    try:
        with get_connection() as backend:
            for mail in mails:
                try:
                    backend.send_messages([mail])
                except Exception as err:  # one refused mail must not cost the others theirs
                    problems.append(f"{mail.subject}: {type(err).__name__}: {_clip(err, 200)}")
    except Exception as err:  # the mail server could not be reached at all
        problems = [f"{mail.subject}: {type(err).__name__}: {_clip(err, 200)}" for mail in mails]
    for problem in problems:
        logger.error("alert mail not sent: %s", problem)
    if problems:
        record_events([EventSpec(kind="alert_mail_failed", connection_id=connection_id, message=p,
                                 level=ConnectorEvent.Level.ERROR) for p in problems])


# -- the mails ---------------------------------------------------------------------------------------


def recipients(organization: Organization) -> tuple[list[str], list[str]]:
    """(to, bcc): the organization's alert addresses, with the admins in Bcc; the admins alone without any."""
    admins = list({address.lower(): address for _name, address in settings.ADMINS}.values())
    own = organization.alert_recipients()
    if not own:
        return admins, []
    known = {address.lower() for address in own}
    return own, [address for address in admins if address.lower() not in known]


def _message(conn: ERPConnection, subject: str, template: str, context: dict[str, Any]) -> EmailMessage | None:
    to, bcc = recipients(conn.organization)
    if not to:
        return None
    context = {"organization": conn.organization.name, "connection": str(conn),
               "connection_link": _admin_url("connectors_erpconnection_change", conn.pk),
               "timeline_link": _admin_url("connectors_connectorevent_changelist", connection__id__exact=conn.pk),
               **context}
    subject = _clip(f"{settings.EMAIL_SUBJECT_PREFIX}{conn.organization.name} / {conn.name} {conn.transport}: "
                    f"{subject}", 200)  # one line: a newline in a name must not become a mail header
    body = render_to_string(template, context)
    secrets = _secrets_of(conn)
    return EmailMessage(_mask(subject, secrets), _mask(body, secrets), settings.DEFAULT_FROM_EMAIL, to=to, bcc=bcc,
                        headers={"Auto-Submitted": "auto-generated"})  # RFC 3834: no auto-replies, please


def _alert_mail(conn: ERPConnection, t: Transition, now: datetime) -> EmailMessage | None:
    lasted = _age((now - t.since).total_seconds()) if t.since else ""
    context = {"started": t.started, "title": t.title, "f": t.facts, "since": _when(t.since), "lasted": lasted,
               "facts_template": f"connectors/alerts/{t.condition}.txt"}
    mail = _message(conn, t.title if t.started else f"{t.title} - resolved", "connectors/alerts/alert.txt",
                    context)
    if mail is not None:
        mail.extra_headers["X-Orderflow-Alert"] = f"{t.condition} {'started' if t.started else 'resolved'}"
    return mail


def _secrets_of(conn: ERPConnection) -> list[str]:
    """The connection's secrets, longest first, to mask in outgoing text (never sent, stored or logged).

    Error texts are written never to hold a secret; this is the second lock, for a library that echoes one.
    """
    values: list[str] = []
    for name in ("password", "private_key_passphrase", "private_key"):
        try:
            value = reveal(getattr(conn, name))
        except Exception:  # unreadable with the configured keys: nothing of it can be masked, or leak from us
            continue
        values += [value, *(value.splitlines() if name == "private_key" else [])]
    found = {v.strip() for v in values if len(v.strip()) >= SECRET_MIN_LENGTH}
    return sorted(found, key=len, reverse=True)


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[secret removed]")
    return text


# -- small formatting helpers ------------------------------------------------------------------------


def _clip(value: object, limit: int = TEXT_LIMIT) -> str:
    """Outside text on one printable line, bounded."""
    text = " ".join(str(value or "").split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z") if moment else ""


def _age(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} days {hours % 24} h"


def _export_line(export: ERPExport) -> str:
    return _clip(f"{export} (order {export.draft.order_number})")


def _admin_url(name: str, *args: object, **query: object) -> str:
    """An absolute link into the admin (ORDERFLOW_BASE_URL), e.g. a list filtered to the cases."""
    path = reverse(f"admin:{name}", args=args)
    return f"{settings.ORDERFLOW_BASE_URL.rstrip('/')}{path}" + (f"?{urlencode(query)}" if query else "")


# -- the daily digest (ALERT_DAILY_DIGEST) -------------------------------------------------------------


def send_digests(*, now: datetime | None = None) -> int:
    """Once a day from ALERT_DIGEST_HOUR, per connection: what is still wrong; returns how many were claimed."""
    now = now or timezone.now()
    due_since = timezone.localtime(now).replace(hour=settings.ALERT_DIGEST_HOUR, minute=0, second=0, microsecond=0)
    if not settings.ALERT_DAILY_DIGEST or now < due_since:
        return 0
    # Conditions that started today were mailed already; the digest reminds of the older ones.
    open_states = AlertState.objects.filter(active=True, started_at__lt=due_since).exclude(condition=C.DIGEST)
    claimed = 0
    for conn in ERPConnection.objects.filter(pk__in=open_states.values("connection_id")).select_related(
            "organization").order_by("pk"):
        states = list(open_states.filter(connection=conn).order_by("started_at"))
        _ensure_states(conn.pk, [C.DIGEST])
        with transaction.atomic():
            if not AlertState.objects.filter(Q(last_sent_at__isnull=True) | Q(last_sent_at__lt=due_since),
                                             connection=conn, condition=C.DIGEST).update(
                    last_sent_at=now, updated_at=now, version=F("version") + 1):
                continue  # another run sent today's
            claimed += 1
            mail = _digest_mail(conn, states, now)
            if mail is not None:
                transaction.on_commit(partial(_send, conn.pk, [mail]))
    return claimed


def _digest_mail(conn: ERPConnection, states: list[AlertState], now: datetime) -> EmailMessage | None:
    present = observe(conn, {s.condition: s.active for s in states})
    items = [{"title": s.details.get("title") or s.get_condition_display(), "since": _when(s.started_at),
              "lasted": _age((now - s.started_at).total_seconds()) if s.started_at else "",
              "f": present.get(s.condition, s.details), "facts_template": f"connectors/alerts/{s.condition}.txt"}
             for s in states]
    return _message(conn, f"daily digest: {len(items)} problem(s) still open", "connectors/alerts/digest.txt",
                    {"items": items, "started": True})


# -- the schedule's entry point ----------------------------------------------------------------------


@dataclass
class AlertRun:
    connections: int = 0
    started: int = 0
    resolved: int = 0
    digests: int = 0
    errors: int = 0
    out_of_time: bool = False

    def __str__(self) -> str:
        late = " (out of time: the next run goes on)" if self.out_of_time else ""
        return (f"{self.connections} connection(s) checked{late}: {self.started} alert(s) started, "
                f"{self.resolved} resolved, {self.digests} digest(s), {self.errors} error(s)")


def _connections(chunk: int = 200) -> Iterator[ERPConnection]:
    """Every connection, read a chunk at a time (fresh rows, no server-side cursor held across commits)."""
    ids = list(ERPConnection.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), chunk):
        yield from ERPConnection.objects.filter(pk__in=ids[start:start + chunk]).select_related(
            "organization").order_by("pk")


def check_all(*, budget: float = RUN_SECONDS) -> AlertRun:
    """Every connection once (within ``budget`` seconds); one that cannot be checked is logged, not the others."""
    run, deadline = AlertRun(), time.monotonic() + budget
    for conn in _connections():
        if time.monotonic() > deadline:
            run.out_of_time = True
            break
        run.connections += 1
        try:
            won = check_connection(conn)
        except Exception:
            run.errors += 1
            logger.exception("alerts: connection %s could not be checked", conn.pk)
            continue
        run.started += sum(t.started for t in won)
        run.resolved += sum(not t.started for t in won)
    try:
        run.digests = send_digests()
    except Exception:
        run.errors += 1
        logger.exception("alerts: the daily digest could not be sent")
    return run


def run_alerts() -> str:
    """The every-minute django-q2 schedule (thin): check every connection; a short summary."""
    return str(check_all())
