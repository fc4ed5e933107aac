"""Every admin page a staff user can open renders for a superuser."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from connectors.models import ConnectorEvent, ERPExport


@pytest.fixture
def populated(make_draft, make_connection) -> None:
    draft = make_draft(lines=2)
    conn = make_connection()
    export = ERPExport.objects.create(draft=draft, connection=conn, filename="x.json", status="SENT")
    ConnectorEvent.objects.create(connection=conn, export=export, kind="delivery", message="delivered x.json")


def test_every_registered_model_renders(admin_client: Client, populated: None) -> None:
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        base = f"admin:{meta.app_label}_{meta.model_name}"
        changelist = admin_client.get(reverse(f"{base}_changelist"))
        assert changelist.status_code == 200, (meta.label, changelist.status_code)
        if model_admin.has_add_permission(changelist.wsgi_request):
            assert admin_client.get(reverse(f"{base}_add")).status_code == 200, meta.label
        obj = model.objects.first()
        if obj is not None:
            response = admin_client.get(reverse(f"{base}_change", args=[obj.pk]))
            assert response.status_code == 200, meta.label


def test_changelist_search_and_filters(admin_client: Client, populated: None) -> None:
    url = reverse("admin:orderflow_draftorder_changelist")
    assert "PO-2026-0042" in admin_client.get(url, {"q": "PO-2026"}).content.decode()
    assert "PO-2026-0042" in admin_client.get(url, {"q": "x.json"}).content.decode()
    assert "0 draft orders" in admin_client.get(url, {"q": "nothing-like-this"}).content.decode()
    assert admin_client.get(url, {"status__exact": "NEW"}).status_code == 200
    exports = reverse("admin:connectors_erpexport_changelist")
    assert "x.json" in admin_client.get(exports, {"status__exact": "SENT"}).content.decode()
    assert "x.json" not in admin_client.get(exports, {"status__exact": "FAILED"}).content.decode()


def test_draft_page_shows_lines_and_exports(admin_client: Client, populated: None) -> None:
    from orderflow.models import DraftOrder

    draft = DraftOrder.objects.get()
    html = admin_client.get(reverse("admin:orderflow_draftorder_change", args=[draft.pk])).content.decode()
    assert "BOLT-M8X41" in html and "BOLT-M8X42" in html
    assert "x.json" in html and "of-status-sent" in html


def test_exports_and_events_are_read_only(admin_client: Client, populated: None) -> None:
    export = ERPExport.objects.get()
    html = admin_client.get(reverse("admin:connectors_erpexport_change", args=[export.pk])).content.decode()
    assert 'name="_save"' not in html
    assert admin_client.get(reverse("admin:connectors_erpexport_add")).status_code == 403


def test_manage_check_and_migrations_are_clean(db: None) -> None:
    call_command("check", fail_level="WARNING")
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_pushed_drafts_are_locked_new_ones_editable(admin_client: Client, make_draft) -> None:
    from orderflow.models import DraftOrder

    new, pushed = make_draft(order_number="PO-NEW"), make_draft(order_number="PO-SENT", status="PUSHED")
    new_html = admin_client.get(reverse("admin:orderflow_draftorder_change", args=[new.pk])).content.decode()
    assert 'name="order_number"' in new_html and 'name="lines-0-quantity"' in new_html
    html = admin_client.get(reverse("admin:orderflow_draftorder_change", args=[pushed.pk])).content.decode()
    assert 'name="order_number"' not in html and 'name="lines-0-quantity"' not in html
    assert "PO-SENT" in html
    assert DraftOrder.objects.get(pk=pushed.pk).order_number == "PO-SENT"


def test_old_events_are_pruned_recent_ones_kept(populated: None, settings) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from connectors.tasks import prune_events

    settings.EVENT_RETENTION_DAYS = 30
    recent = ConnectorEvent.objects.get()
    old = ConnectorEvent.objects.create(connection=recent.connection, kind="delivery", message="old")
    ConnectorEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    assert prune_events() == "1 event(s) older than 30 days deleted"
    assert list(ConnectorEvent.objects.values_list("pk", flat=True)) == [recent.pk]


def test_lists_of_exports_and_events_do_not_read_the_archived_files(admin_client: Client, populated: None) -> None:
    """An export's archived bytes (KBs to MBs) are read for a download or a delivery, not for a page of rows."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ERPExport.objects.update(payload=b'{"export_id": "..."}\n' * 1000)
    for model in ("erpexport", "connectorevent"):
        with CaptureQueriesContext(connection) as page:
            html = admin_client.get(reverse(f"admin:connectors_{model}_changelist")).content.decode()
        assert "x.json" in html, model
        assert not [q["sql"] for q in page.captured_queries if '"payload"' in q["sql"]], model
