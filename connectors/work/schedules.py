"""The django-q2 schedules, created after `migrate` (idempotent by name), and the demo's own one."""

from __future__ import annotations

from typing import Any

# name -> (task, minutes between runs)
SCHEDULES: dict[str, tuple[str, int]] = {
    "orderflow: deliver due exports": ("connectors.tasks.deliver_all_due", 1),
    "orderflow: poll ERP acks": ("connectors.tasks.poll_all_due", 1),
    "orderflow: prune connector events": ("connectors.tasks.prune_events", 24 * 60),
    "orderflow: connection alerts": ("connectors.tasks.run_alerts", 1),
}

# Only `load_demo` creates this one (never `migrate`): the simulated ERP of the demo's local dropzone.
DEMO_SCHEDULE = "orderflow demo: simulated ERP answers exports"
DEMO_TASK = "connectors.demo_tasks.answer_demo_exports"


def ensure_schedules(**kwargs: Any) -> None:
    """post_migrate receiver: the schedules, created or repaired, never duplicated."""
    from django_q.models import Schedule

    for name, (func, minutes) in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )


def ensure_demo_schedule(*, connection_id: int) -> bool:
    """The demo ERP's every-minute schedule on this connection, created or repaired; True if created."""
    from django_q.models import Schedule

    _schedule, created = Schedule.objects.update_or_create(
        name=DEMO_SCHEDULE,
        defaults={"func": DEMO_TASK, "args": f"({connection_id},)", "kwargs": None, "hook": None,
                  "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1, "cluster": None},
    )
    return created


def remove_demo_schedule() -> int:
    """Delete the demo ERP's schedule (its connection is gone or no longer the demo's); how many rows went."""
    from django_q.models import Schedule

    deleted, _by_model = Schedule.objects.filter(name=DEMO_SCHEDULE).delete()
    return deleted
