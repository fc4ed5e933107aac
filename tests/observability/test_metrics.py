"""Issue 20: /metrics shows what the engines did (from their heartbeats) and where things stand (from rows).

A real delivery and poll over the tests' sshd run on a real engine's threads, then the page is scraped and
parsed as Prometheus would; two engines' tallies add up; labels stay bounded; the token is required.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from connectors.models import AlertState, EngineProcess, ERPConnection, ERPExport
from connectors.observability.metrics import OTHER, fold
from connectors.work.engine import Engine
from orderflow.models import DraftOrder, Organization
from tests.fixtures.dropzones import Dropzone
from tests.integration import wait_until

from .scrape import parse, scrape, series, total, value


@contextmanager
def running(engine: Engine) -> Iterator[None]:
    thread = threading.Thread(target=engine.run, name="engine-under-test")
    thread.start()
    try:
        yield
    finally:
        engine.stop()
        thread.join(30)
        assert not thread.is_alive(), "the engine did not stop"


def approved(make_draft: Callable[..., DraftOrder], **fields: object) -> DraftOrder:
    """A draft approved as a push leaves it (its export is made here, not by the push's signal)."""
    draft = make_draft(**fields)
    DraftOrder.objects.filter(pk=draft.pk).update(status=DraftOrder.Status.APPROVED)
    return draft


@pytest.mark.slow
@pytest.mark.parametrize("dropzone", ["sftp"], indirect=True)
def test_a_delivery_and_a_poll_over_sshd_show_in_the_scrape(
        transactional_db: None, dropzone: Dropzone, make_draft: Callable[..., DraftOrder]) -> None:
    conn = dropzone.connection
    ERPConnection.objects.filter(pk=conn.pk).update(next_poll_at=timezone.now() + timedelta(days=1))
    export = ERPExport.objects.create(draft=approved(make_draft), connection=conn, next_attempt_at=timezone.now())
    engine = Engine(sessions=2, tick=0.1)
    with running(engine):
        wait_until(lambda: ERPExport.objects.filter(pk=export.pk, status="SENT").exists(), what="the delivery")
        export.refresh_from_db()
        ack = json.dumps({"export_id": str(export.pk), "status": "accepted", "erp_order_number": "SO-1"}).encode()
        dropzone.put_ack(f"ack_{export.filename}", ack)
        ERPConnection.objects.filter(pk=conn.pk).update(next_poll_at=timezone.now())
        wait_until(lambda: ERPExport.objects.filter(pk=export.pk, status="ACKED").exists(), what="the ack")
    # The engine stopped: its last heartbeat holds its final tallies, and it is no longer alive.
    samples = scrape()
    me = {"engine": engine.name}
    assert value(samples, "orderflow_deliveries_total", **me, outcome="ok") == 1
    assert value(samples, "orderflow_delivery_files_total", **me, result="sent") == 1
    assert value(samples, "orderflow_delivery_bytes_total", **me) == export.payload_size > 0
    assert value(samples, "orderflow_polls_total", **me, outcome="ok") == 1
    assert value(samples, "orderflow_ack_files_total", **me, outcome="accepted") == 1
    assert value(samples, "orderflow_ack_bytes_total", **me) == len(ack)
    for kind in ("delivery", "poll"):
        assert value(samples, f"orderflow_{kind}_duration_seconds_count", **me) == 1
        assert value(samples, f"orderflow_{kind}_duration_seconds_bucket", **me, le="+Inf") == 1
        assert value(samples, f"orderflow_{kind}_duration_seconds_sum", **me) > 0
    assert value(samples, "orderflow_engine_up", **me) == 0 and value(samples, "orderflow_engines_alive") == 0
    assert value(samples, "orderflow_exports", organization="acme", status="ACKED") == 1
    assert total(samples, "orderflow_exports") == 1
    assert value(samples, "orderflow_oldest_unanswered_export_age_seconds", organization="acme") is None
    ours = {"organization": "acme", "connection": conn.name}
    assert value(samples, "orderflow_connection_poll_failures", **ours) == 0
    assert 0 <= value(samples, "orderflow_connection_last_poll_success_age_seconds", **ours) < 600
    assert value(samples, "orderflow_connections", state="active") == 1
    assert value(samples, "orderflow_queue_jobs") == 0
    assert value(samples, "orderflow_broker_up", kind="orm") == 1


def test_the_tallies_of_two_engines_add_up(db: None, make_draft: Callable[..., DraftOrder],
                                           local_connection: ERPConnection) -> None:
    """Two engines (two qcluster processes, here on two machines) each deliver one export: each has its own
    series, and summing over ``engine`` gives both."""
    ERPConnection.objects.filter(pk=local_connection.pk).update(next_poll_at=timezone.now() + timedelta(days=1))
    engines = [Engine(inline=True, name=f"worker-{n}:100{n}") for n in (1, 2)]
    for engine in engines:
        ERPExport.objects.create(draft=approved(make_draft), connection=local_connection,
                                 next_attempt_at=timezone.now())
        assert engine.round() == 1  # the one due delivery: this engine runs it
        engine._heartbeat(started=True)  # what its keeper thread writes every 5 s
    assert set(ERPExport.objects.values_list("status", flat=True)) == {"SENT"}
    samples = scrape()
    for engine in engines:
        assert value(samples, "orderflow_delivery_files_total", engine=engine.name, result="sent") == 1
        assert value(samples, "orderflow_engine_up", engine=engine.name) == 1
    assert total(samples, "orderflow_delivery_files_total", result="sent") == 2
    assert total(samples, "orderflow_deliveries_total", outcome="ok") == 2
    assert total(samples, "orderflow_delivery_duration_seconds_count") == 2
    assert total(samples, "orderflow_delivery_bytes_total") == sum(
        ERPExport.objects.values_list("payload_size", flat=True))
    assert value(samples, "orderflow_engines_alive") == 2
    assert {s["engine"] for s in series(samples, "orderflow_engine_sessions")} == {e.name for e in engines}
    assert value(samples, "orderflow_exports", organization="acme", status="SENT") == 2
    assert value(samples, "orderflow_oldest_unanswered_export_age_seconds", organization="acme") >= 0
    # An engine silent for long drops out of the page; its counts were scraped while it lived.
    EngineProcess.objects.filter(name=engines[0].name).update(seen_at=timezone.now() - timedelta(hours=1))
    assert total(scrape(), "orderflow_delivery_files_total", result="sent") == 1


def test_labels_are_bounded_by_the_limit(db: None, make_draft: Callable[..., DraftOrder], settings) -> None:
    settings.METRICS_LABEL_LIMIT = 2
    now = timezone.now()
    for n, waiting in enumerate((1, 3, 2, 5)):  # pending exports per organization
        org = Organization.objects.create(slug=f"o{n}", name=f"O{n}")
        conn = ERPConnection.objects.create(organization=org, name=f"ERP {n}", transport="local", is_active=True,
                                            poll_failures=n, last_error_code="auth_failed" if n else "")
        for _ in range(waiting):
            ERPExport.objects.create(draft=make_draft(organization=org), connection=conn,
                                     next_attempt_at=now + timedelta(hours=1))
    AlertState.objects.create(connection=conn, condition="poll_failing", active=True)
    samples = scrape()
    pending = {s["organization"]: value(samples, "orderflow_exports", **s)
               for s in series(samples, "orderflow_exports")}
    assert pending == {"o3": 5, "o1": 3, OTHER: 3}  # the two largest, the rest summed
    failures = {(s["organization"], s["connection"]): value(samples, "orderflow_connection_poll_failures", **s)
                for s in series(samples, "orderflow_connection_poll_failures")}
    assert failures == {("o3", "ERP 3"): 3, ("o2", "ERP 2"): 2, (OTHER, OTHER): 1}  # the worst, the rest's max
    assert value(samples, "orderflow_connection_fault", organization=OTHER, connection=OTHER, code="auth_failed") == 1
    assert len(series(samples, "orderflow_oldest_pending_export_age_seconds")) == 3
    assert value(samples, "orderflow_alerts_active", condition="poll_failing") == 1
    assert value(samples, "orderflow_alerts_active", condition="ack_overdue") == 0
    assert value(samples, "orderflow_queue_jobs") == 4  # each connection's first poll; the exports wait an hour


def test_fold_keeps_the_largest_and_folds_the_rest_per_remaining_label() -> None:
    values = {("a", "x"): 1.0, ("a", "y"): 9.0, ("b", "x"): 4.0, ("c", "x"): 2.0, ("c", "y"): 1.0}
    assert fold(values, limit=1, identity=1, combine=sum) == {("a", "x"): 1.0, ("a", "y"): 9.0,
                                                               (OTHER, "x"): 6.0, (OTHER, "y"): 1.0}
    assert fold(values, limit=0, identity=1, combine=max) == {(OTHER, "x"): 4.0, (OTHER, "y"): 9.0}
    assert fold(values, limit=10, identity=1, combine=sum) == values


def test_the_scrape_is_cached_for_an_interval(db: None, org: Organization, settings) -> None:
    settings.METRICS_CACHE_SECONDS = 3600
    first = scrape()
    ERPConnection.objects.create(organization=org, name="ERP", transport="local", is_active=True)
    again = parse(Client().get("/metrics").content.decode())  # within the interval: the same page
    assert value(again, "orderflow_connections", state="active") == value(first, "orderflow_connections",
                                                                          state="active") == 0
    assert value(scrape(), "orderflow_connections", state="active") == 1  # forgotten: computed afresh


def test_the_token_is_required_when_one_is_set(db: None, settings) -> None:
    settings.METRICS_TOKEN = "scrape-token-5f2e"
    client = Client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-token-5f2e"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert b"orderflow_" not in response.content
    assert "orderflow_alerts_active" in {name for name, _ in scrape(client, Authorization="Bearer scrape-token-5f2e")}


def test_without_a_token_production_refuses_scrapes(db: None, settings) -> None:
    settings.METRICS_TOKEN, settings.METRICS_PUBLIC = "", False
    response = Client().get("/metrics")
    assert response.status_code == 403 and b"METRICS_TOKEN" in response.content
    settings.METRICS_PUBLIC = True  # the operator says the network protects the port
    assert Client().get("/metrics").status_code == 200


def test_probes_and_metrics_answer_by_address_over_plain_http(db: None, settings) -> None:
    """A load balancer asks by IP over HTTP: no 400 for the host, no redirect to HTTPS (the admin still gets
    both)."""
    settings.ALLOWED_HOSTS, settings.SECURE_SSL_REDIRECT = ["orders.example.com"], True
    client = Client(HTTP_HOST="10.0.0.7:8000")
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/admin/").status_code == 400
    assert Client(HTTP_HOST="orders.example.com").get("/admin/").status_code == 301
    assert client.post("/healthz").status_code == 405
