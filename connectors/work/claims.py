"""Claims on a connection for one kind of job: at most one poll and one delivery of it in flight, anywhere.

A claim is a token and a lease written with a conditional UPDATE that re-checks "unclaimed" on the row
itself, so of any number of engines (on any number of machines) exactly one wins each connection.  The
engine's lease keeper renews the claims of the jobs it runs; a dead process renews nothing, and its claims
expire within one lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from django.db.models import Q

from ..models import ERPConnection
from .leases import lease_until, new_token


class Kind(StrEnum):
    POLL = "poll"
    DELIVERY = "delivery"


_FIELDS = {Kind.POLL: ("poll_claim_token", "poll_claimed_until"),
           Kind.DELIVERY: ("delivery_claim_token", "delivery_claimed_until")}


def unclaimed(kind: Kind, now: datetime, *, via: str = "") -> Q:
    """On the connection row itself (no join, so an UPDATE can re-check it row by row); ``via``: the lookup
    that reaches the connection from another model (``"connection"`` from an export)."""
    _token, until = _FIELDS[kind]
    field = f"{via}__{until}" if via else until
    return Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lt": now})


def claim(kind: Kind, connection_ids: Iterable[int], *, now: datetime) -> tuple[uuid.UUID, list[int]]:
    """Claim whichever of these connections nobody holds: one token for all, and the ids won."""
    ids = list(connection_ids)
    token = new_token()
    if not ids:
        return token, []
    field, until = _FIELDS[kind]
    ERPConnection.objects.filter(unclaimed(kind, now), pk__in=ids).update(**{field: token, until: lease_until(now)})
    won = list(ERPConnection.objects.filter(pk__in=ids, **{field: token}).values_list("pk", flat=True))
    return token, won


def release(kind: Kind, connection_id: int, token: uuid.UUID) -> None:
    """Give the claim back (only if it is still ours)."""
    field, until = _FIELDS[kind]
    ERPConnection.objects.filter(pk=connection_id, **{field: token}).update(**{field: None, until: None})


def renew(kind: Kind, held: Iterable[tuple[int, uuid.UUID]]) -> int:
    """Extend the leases of these ``(connection id, token)`` claims still ours; how many rows were."""
    held = list(held)
    if not held:
        return 0
    field, until = _FIELDS[kind]
    # One token may cover several connections claimed together: the ids pick the jobs still worth renewing.
    return ERPConnection.objects.filter(pk__in={pk for pk, _t in held}, **{f"{field}__in": {t for _p, t in held}}
                                        ).update(**{until: lease_until()})
