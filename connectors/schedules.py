"""The django-q2 schedules, created after `migrate` (idempotent by name)."""

from __future__ import annotations

from typing import Any

# name -> (task, minutes between runs)
SCHEDULES: dict[str, tuple[str, int]] = {
    "orderflow: deliver due exports": ("connectors.tasks.deliver_all_due", 1),
    "orderflow: poll ERP acks": ("connectors.tasks.poll_all_due", 1),
    "orderflow: prune connector events": ("connectors.tasks.prune_events", 24 * 60),
}


def ensure_schedules(**kwargs: Any) -> None:
    """post_migrate receiver: the schedules, created or repaired, never duplicated."""
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
