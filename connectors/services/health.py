"""Where each connection stands, at a glance: one status with its reason, the last of everything, the counts.

Statuses, worst first: **failing** (nothing gets through until someone acts:
the server's key is unknown or changed, the login or a directory is refused,
a setting cannot work, or polls fail again and again), **degraded** (it
works, but something needs a look: deliveries failed for good or are being
retried, acks are overdue, a poll failed, the ERP leaves our files in its
inbox), **healthy**, **draining** (inactive, still read while answers are
awaited), **inactive**.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet

from ..models import ConnectorEvent, ERPConnection, ERPExport
from ..transports import ErrorCode
from .lifecycle import current_export_ids

S = ERPExport.Status
FAILING_CODES = {ErrorCode.HOST_KEY_UNKNOWN, ErrorCode.HOST_KEY_CHANGED, ErrorCode.AUTH, ErrorCode.PERMISSION,
                 ErrorCode.NOT_FOUND, ErrorCode.CONFIG, ErrorCode.KEY_INVALID, ErrorCode.SYMLINK}
REASONS = {
    ErrorCode.HOST_KEY_UNKNOWN: "no host key is pinned: test the connection and pin the server's key",
    ErrorCode.HOST_KEY_CHANGED: "the server's key CHANGED: check it with the server's admin before pinning it",
    ErrorCode.AUTH: "the server refuses the login",
    ErrorCode.PERMISSION: "the server refuses access to a directory",
    ErrorCode.NOT_FOUND: "a directory is missing on the server",
    ErrorCode.CONFIG: "a setting cannot work (see the last event)",
    ErrorCode.KEY_INVALID: "the private key cannot be read (or its passphrase is wrong)",
    ErrorCode.SYMLINK: "a directory of the dropzone is a symbolic link, which is refused",
}
FAILING_POLLS = 3


def stale_minutes() -> int:
    """After how long our files left in the ERP's inbox count (ALERT_INBOX_STALE_MINUTES)."""
    return int(getattr(settings, "ALERT_INBOX_STALE_MINUTES", 30))


@dataclass
class Health:
    connection: ERPConnection
    status: str  # failing, degraded, healthy, draining, inactive
    reasons: list[str] = field(default_factory=list)
    pending: int = 0  # to deliver (or being retried)
    retrying: int = 0  # of pending: a fault was met, the next attempt is scheduled
    awaiting: int = 0  # delivered, no answer yet
    overdue: int = 0  # of awaiting: past ACK_OVERDUE_AFTER_MINUTES
    failed: int = 0  # delivery failed for good (current exports only)
    stale_inbox: int = 0  # our files the ERP has left in its inbox too long
    last_delivery: datetime | None = None
    last_test: ConnectorEvent | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or {"healthy": "all good", "inactive": "switched off"}.get(self.status, "")


def _status(conn: ERPConnection, h: Health) -> str:
    code = ErrorCode(conn.last_error_code) if conn.last_error_code in ErrorCode._value2member_map_ else None
    if code in FAILING_CODES:
        h.reasons.append(REASONS[code])
    if conn.poll_failures >= FAILING_POLLS:
        h.reasons.append(f"the last {conn.poll_failures} polls failed")
    if conn.transport == "sftp" and not conn.host_key.strip():
        h.reasons.append(REASONS[ErrorCode.HOST_KEY_UNKNOWN])
    if conn.transport in ("sftp", "ftp", "ftps") and not conn.has_secrets():
        h.reasons.append("no password or private key is stored")
    if h.reasons:
        return "failing"
    if not conn.is_active:
        return "draining" if h.awaiting else "inactive"
    degraded = [
        (code == ErrorCode.OVER_BUDGET, "cut off: the server did not finish its last job within its time budget "
                                        "(slow or stuck); it is tried again later"),
        (h.failed, f"{h.failed} export(s) failed for good"),
        (h.retrying, f"{h.retrying} export(s) being retried"),
        (h.overdue, f"{h.overdue} export(s) without an ack after {settings.ACK_OVERDUE_AFTER_MINUTES} min"),
        (conn.poll_failures and code != ErrorCode.OVER_BUDGET, "the last poll failed"),
        (h.stale_inbox, f"the ERP left {h.stale_inbox} of our file(s) in its inbox for over "
                        f"{stale_minutes()} min"),
    ]
    h.reasons += [text for count, text in degraded if count]
    if h.last_test is None and not conn.last_poll_at:
        h.reasons.append("never tested: run the connection test")
    return "degraded" if h.reasons else "healthy"


def health_of(connections: Iterable[ERPConnection]) -> list[Health]:
    """One Health per connection, with a fixed number of queries whatever their number."""
    conns = list(connections)
    ids = [c.pk for c in conns]
    exports = ERPExport.objects.filter(connection_id__in=ids)
    counts = {row["connection_id"]: row for row in exports.values("connection_id").annotate(
        pending=Count("pk", filter=Q(status=S.PENDING)),
        retrying=Count("pk", filter=Q(status=S.PENDING) & ~Q(last_error="")),
        awaiting=Count("pk", filter=Q(status=S.SENT)),
    )}
    overdue = dict(exports.ack_overdue().values("connection_id").annotate(n=Count("pk")).values_list(
        "connection_id", "n"))
    failed_rows = list(exports.filter(status=S.FAILED).values_list("pk", "draft_id", "connection_id"))
    current = set(current_export_ids({draft for _, draft, _ in failed_rows}).values())
    failed: dict[int, int] = {}
    for pk, _draft, conn_id in failed_rows:
        if pk in current:
            failed[conn_id] = failed.get(conn_id, 0) + 1
    delivered = dict(ConnectorEvent.objects.filter(connection_id__in=ids, kind="delivered").values(
        "connection_id").annotate(last=Max("created_at")).values_list("connection_id", "last"))
    tests = {}
    for event in ConnectorEvent.objects.filter(connection_id__in=ids, kind="connection_test").order_by(
            "connection_id", "-created_at", "-id"):
        tests.setdefault(event.connection_id, event)
    stale_after = 60 * stale_minutes()
    now = time.time()
    result = []
    for conn in conns:
        row = counts.get(conn.pk, {})
        h = Health(conn, "", pending=row.get("pending", 0), retrying=row.get("retrying", 0),
                   awaiting=row.get("awaiting", 0), overdue=overdue.get(conn.pk, 0), failed=failed.get(conn.pk, 0),
                   stale_inbox=sum(1 for seen in (conn.inbox_seen or {}).values() if now - seen > stale_after),
                   last_delivery=delivered.get(conn.pk), last_test=tests.get(conn.pk))
        h.status = _status(conn, h)
        result.append(h)
    return result


def visible_connections(queryset: QuerySet[ERPConnection]) -> QuerySet[ERPConnection]:
    return queryset.select_related("organization").order_by("organization__name", "name")
