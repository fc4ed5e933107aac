"""The demo's dropzone for `make run`: a local connection for organization `demo`, inside LOCAL_DROPZONE_ROOT."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from orderflow.demo import load_demo_orders
from orderflow.models import Organization

from .models import ERPConnection

DEMO_CONNECTION = "Demo dropzone (local)"


@transaction.atomic
def load_demo() -> list[str]:
    """The demo organization and drafts, and its active local connection; safe to rerun."""
    created = load_demo_orders()
    org = Organization.objects.get(slug="demo")
    root = Path(settings.LOCAL_DROPZONE_ROOT) / "demo"
    for sub in ("inbound", "outbound", "outbound/processed", "outbound/failed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _conn, made = ERPConnection.objects.get_or_create(
        organization=org, name=DEMO_CONNECTION,
        defaults={"transport": "local", "host": "demo", "export_path": "/inbound", "ack_path": "/outbound",
                  "min_ack_age_seconds": 2, "poll_interval_seconds": 10, "is_active": True},
    )
    if made:
        created.append(f"local connection on {root}")
    return created
