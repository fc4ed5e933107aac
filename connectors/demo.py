"""The demo for `make run`: a local connection for organization `demo`, inside LOCAL_DROPZONE_ROOT, and its ERP.

The ERP is ``manage.py simulate_erp --demo`` (:class:`connectors.simulator.ERPSimulator`), a process of its
own that `make run` starts next to the web server and the cluster, like the ERP on the other side of a real
dropzone: a pushed demo draft is answered and confirmed without anyone writing an ack file, and no worker of
ours is spent on it.  It answers nothing but the demo's own local dropzone (``not_the_demo``).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from orderflow.demo import load_demo_orders
from orderflow.models import Organization

from .models import ERPConnection

DEMO_ORGANIZATION = "demo"
DEMO_CONNECTION = "Demo dropzone (local)"
DEMO_HOST = ""  # the organization's own directory of LOCAL_DROPZONE_ROOT (var/dropzone/demo), no sub-directory


@transaction.atomic
def load_demo() -> list[str]:
    """The demo organization and drafts, and its active local connection; safe to rerun."""
    created = load_demo_orders()
    org = Organization.objects.get(slug=DEMO_ORGANIZATION)
    root = Path(settings.LOCAL_DROPZONE_ROOT) / DEMO_ORGANIZATION
    for sub in ("inbound", "outbound", "outbound/processed", "outbound/failed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conn, made = ERPConnection.objects.get_or_create(
        organization=org, name=DEMO_CONNECTION,
        defaults={"transport": "local", "host": DEMO_HOST, "export_path": "/inbound", "ack_path": "/outbound",
                  "min_ack_age_seconds": 2, "poll_interval_seconds": 10, "is_active": True},
    )
    if made:
        created.append(f"local connection on {root}")
    return created


def demo_connection() -> ERPConnection | None:
    return ERPConnection.objects.select_related("organization").filter(
        organization__slug=DEMO_ORGANIZATION, name=DEMO_CONNECTION).first()


def not_the_demo(conn: ERPConnection | None) -> str:
    """Why the simulated ERP must not answer this connection's files ("" when it may)."""
    if conn is None:
        return "the demo connection no longer exists"
    if conn.organization.slug != DEMO_ORGANIZATION or conn.name != DEMO_CONNECTION:
        return f"connection {conn.pk} is no longer the demo's ({DEMO_ORGANIZATION} / {DEMO_CONNECTION})"
    if conn.transport != "local" or conn.host.strip("/") != DEMO_HOST:
        # A real ERP's dropzone: answering (and removing) its files would take orders away from that ERP.
        return f"connection {conn.pk} no longer points at the demo's local dropzone"
    return ""
