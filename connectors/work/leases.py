"""Claims on rows with a short lease, renewed while the work goes on.

Deliveries claim exports and polls claim a connection the same way: a token
and an expiry written with a conditional UPDATE.  The lease is short (about a
minute, ``CLAIM_LEASE_SECONDS``) so work held by a killed worker is picked up
again by the next every-minute schedule after it expires — about two minutes
at worst — and the worker that holds it renews it while it works.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone


def lease_length() -> timedelta:
    return timedelta(seconds=settings.CLAIM_LEASE_SECONDS)


def lease_until(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + lease_length()


def new_token() -> uuid.UUID:
    return uuid.uuid4()


class Lease:
    """The rows held under one token; ``keep()`` renews them once a third of the lease has passed."""

    def __init__(self, rows: QuerySet, *, until_field: str, token: uuid.UUID) -> None:
        self.rows = rows  # already filtered by our token (and whatever else "still ours" means)
        self.until_field = until_field
        self.token = token
        self._renewed = time.monotonic()

    def keep(self) -> bool:
        """Renew when due; False when none of the rows is ours any more (the lease expired and was taken)."""
        if time.monotonic() - self._renewed < settings.CLAIM_LEASE_SECONDS / 3:
            return True
        self._renewed = time.monotonic()
        return bool(self.rows.update(**{self.until_field: lease_until()}))
