"""Upgrading: migration 0012 moves archived export files from Django storage into their rows (and back)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.apps.registry import Apps
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from connectors.models import ERPConnection, ERPExport
from connectors.outbound.delivery import deliver_due_exports
from orderflow.models import DraftOrder

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("connectors", "0011_poll_task")]


def migrate(targets: list[tuple[str, str]]) -> Apps:
    MigrationExecutor(connection).migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps  # a fresh loader: the new state


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes("connectors")


@pytest.fixture
def rolled_back() -> Iterator[Apps]:
    today = latest()
    try:
        yield migrate(BEFORE)
    finally:
        migrate(today)  # the other tests need today's schema


def test_archived_files_move_into_their_rows_and_back(
    local_connection: ERPConnection, local_dropzone: Path,  # made with today's schema, before the roll-back
    rolled_back: Apps, make_draft: Callable[..., DraftOrder], capsys: pytest.CaptureFixture[str],
) -> None:
    old_export = rolled_back.get_model("connectors", "ERPExport")
    raw = b'{"export_id": "archived"}\n'
    kept = old_export.objects.create(draft_id=make_draft(order_number="PO-1").pk, status="SENT",
                                     filename="kept.json", payload_size=len(raw))
    kept.payload.save("kept.json", ContentFile(raw))  # as delivery archived files up to 0011
    lost = old_export.objects.create(draft_id=make_draft(order_number="PO-2").pk, status="PENDING",
                                     connection_id=local_connection.pk, filename="lost.json", payload_size=3,
                                     payload="exports/2026/11/lost.json")  # its file is not in this storage
    archived = kept.payload.name

    migrate(latest())

    assert bytes(ERPExport.objects.get(pk=kept.pk).payload) == raw
    assert not default_storage.exists(archived), "moved, not copied: storage no longer needs sharing"
    assert ERPExport.objects.get(pk=lost.pk).payload is None
    assert "1 archived export file was not found" in capsys.readouterr().out
    # The export whose archive is lost is never rebuilt under its frozen name: it fails, saying why.
    report = deliver_due_exports(connection=local_connection)
    failed = ERPExport.objects.get(pk=lost.pk)
    assert report.failed == ["lost.json"] and failed.status == ERPExport.Status.FAILED
    assert "archived file was lost" in failed.last_error and "push the draft again" in failed.last_error
    assert not list((local_dropzone / "inbound").iterdir())

    old_export = migrate(BEFORE).get_model("connectors", "ERPExport")
    back = old_export.objects.get(pk=kept.pk)
    assert back.payload.name and back.payload.read() == raw


def test_local_dropzones_move_into_their_organizations_directory(
        org, capsys: pytest.CaptureFixture[str]) -> None:
    """0018 (issue 18): a host that named the organization's own directory keeps resolving to the same place."""
    today = latest()
    try:
        old = migrate([("connectors", "0017_observability")])
        connection = old.get_model("connectors", "ERPConnection")
        same = connection.objects.create(organization_id=org.pk, name="same", transport="local", host="acme/erp")
        mine = connection.objects.create(organization_id=org.pk, name="mine", transport="local", host="acme")
        elsewhere = connection.objects.create(organization_id=org.pk, name="elsewhere", transport="local",
                                              host="shared")
        migrate(today)
    finally:
        migrate(today)
    hosts = dict(ERPConnection.objects.values_list("name", "host"))
    assert hosts == {"same": "erp", "mine": "", "elsewhere": "shared"}
    out = capsys.readouterr().out
    assert f"connection {elsewhere.pk} (elsewhere): move <root>/shared to <root>/acme/shared" in out
    assert str(same.pk) + " (" not in out and f"connection {mine.pk} " not in out
