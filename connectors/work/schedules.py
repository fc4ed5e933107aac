"""The django-q2 schedules, created after ``migrate`` (idempotent by name): short tasks only.

Polls and deliveries are not scheduled tasks: the dropzone engine in every ``qcluster`` process finds due
work by itself (docs/work-model.md).  Schedules that earlier versions created for them are deleted here.
"""

from __future__ import annotations

from typing import Any

# name -> (task, minutes between runs)
SCHEDULES: dict[str, tuple[str, int]] = {
    "orderflow: sweep unfinished pushes": ("connectors.tasks.sweep", 1),
    "orderflow: prune connector events": ("connectors.tasks.prune_events", 24 * 60),
    "orderflow: connection alerts": ("connectors.tasks.run_alerts", 1),
}
# Earlier versions' schedules: polls and deliveries as worker tasks, and the demo ERP as a 45 s worker task.
OBSOLETE = ("orderflow: deliver due exports", "orderflow: poll ERP acks",
            "orderflow demo: simulated ERP answers exports")


def ensure_schedules(**kwargs: Any) -> None:
    """post_migrate receiver: the schedules, created or repaired, never duplicated; obsolete ones removed."""
    from django_q.models import Schedule

    Schedule.objects.filter(name__in=OBSOLETE).delete()
    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
