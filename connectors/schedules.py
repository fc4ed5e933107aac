"""The django-q2 schedules, created after `migrate` (idempotent by name)."""

from __future__ import annotations

from typing import Any

SCHEDULES: dict[str, str] = {
    "orderflow: deliver due exports": "connectors.tasks.deliver_all_due",
    "orderflow: poll ERP acks": "connectors.tasks.poll_all_due",
}


def ensure_schedules(**kwargs: Any) -> None:
    """post_migrate receiver: every-minute schedules, created or repaired, never duplicated."""
    from django_q.models import Schedule

    for name, func in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
        )
