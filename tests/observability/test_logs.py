"""Issue 20: LOG_FORMAT=json writes one JSON object per line, with the organization, connection, export and
task ids where they are known, in the web process, in the engine's jobs, in django-q2's tasks, and in a real
``qcluster``'s output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.tasks import async_task

from connectors.models import ERPConnection, ERPExport
from connectors.observability.logs import JSONFormatter, log_context
from connectors.work.engine import Engine
from orderflow.models import DraftOrder
from tests.integration import child_env, manage, running, wait_until

from .test_metrics import approved

log = logging.getLogger("tests.observability")


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """The root logger also writes JSON lines into a buffer, as the console handler does with LOG_FORMAT=json."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.level = level


def log_this_task() -> None:
    log.warning("inside a task")


def test_each_record_is_one_json_object_on_one_line(json_lines: Callable[[], list[dict]]) -> None:
    with log_context(organization_id=3, connection_id=7):
        log.warning("two\nlines and a lone surrogate \udcff", extra={"export_id": "e-1"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    log.warning("outside")
    first, failed, outside = json_lines()
    assert first["message"] == "two\nlines and a lone surrogate \udcff" and first["level"] == "WARNING"
    assert first["logger"] == "tests.observability" and first["time"].endswith("+00:00")
    assert (first["organization_id"], first["connection_id"], first["export_id"]) == (3, 7, "e-1")
    assert "ValueError: boom" in failed["exception"] and failed["connection_id"] == 7
    assert "connection_id" not in outside and "organization_id" not in outside


def test_the_engine_s_jobs_log_with_their_ids(json_lines: Callable[[], list[dict]], db: None,
                                              make_draft: Callable[..., DraftOrder],
                                              local_connection: ERPConnection, local_dropzone: Path) -> None:
    export = ERPExport.objects.create(draft=approved(make_draft),
                                      connection=local_connection, next_attempt_at=timezone.now())
    Engine(inline=True).round()  # the first poll and the delivery
    export.refresh_from_db()
    (local_dropzone / "outbound" / f"ack_{export.filename}").write_text(
        json.dumps({"export_id": str(export.pk), "status": "accepted", "erp_order_number": "SO-1"}))
    ERPConnection.objects.filter(pk=local_connection.pk).update(next_poll_at=timezone.now())
    Engine(inline=True).round()
    lines = {line.get("event"): line for line in json_lines() if line.get("event")}
    ids = {"organization_id": local_connection.organization_id, "connection_id": local_connection.pk,
           "export_id": str(export.pk)}
    assert {k: lines["delivered"][k] for k in ids} == ids and lines["delivered"]["job"] == "delivery"
    assert {k: lines["ack_accepted"][k] for k in ids} == ids and lines["ack_accepted"]["job"] == "poll"


def test_a_task_s_lines_carry_its_id(json_lines: Callable[[], list[dict]], sync_tasks: None, db: None) -> None:
    task_id = async_task("tests.observability.test_logs.log_this_task")
    log.warning("after the task")
    inside = next(line for line in json_lines() if line["message"] == "inside a task")
    assert inside["task_id"] == task_id and inside["task"] == "tests.observability.test_logs.log_this_task"
    after = next(line for line in json_lines() if line["message"] == "after the task")
    assert "task_id" not in after


@pytest.mark.slow
def test_a_qcluster_logs_json_lines(transactional_db: None, make_draft: Callable[..., DraftOrder],
                                    local_connection: ERPConnection, tmp_path: Path) -> None:
    export = ERPExport.objects.create(draft=approved(make_draft),
                                      connection=local_connection, next_attempt_at=timezone.now())
    env = child_env(tmp_path / "media", LOG_FORMAT="json", LOG_LEVEL="INFO", Q_WORKERS="1")
    with running(manage("qcluster"), env=env, log=tmp_path / "qcluster.log") as cluster:
        wait_until(lambda: ERPExport.objects.filter(pk=export.pk, status="SENT").exists(), what="the delivery",
                   alive=cluster)
    lines = [json.loads(line) for line in cluster.output.splitlines() if line.strip()]  # every line parses
    delivered = next(line for line in lines if line.get("event") == "delivered")
    assert delivered["export_id"] == str(export.pk) and delivered["connection_id"] == local_connection.pk
    assert delivered["organization_id"] == local_connection.organization_id and delivered["job"] == "delivery"
    assert any(line["logger"] == "django-q" for line in lines)  # django-q2's own lines are JSON too
