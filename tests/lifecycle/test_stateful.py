"""A stateful property test of the export/draft lifecycle against a real local dropzone and the real database.

Hypothesis drives random sequences of what staff, the pipeline and the ERP do:
approve, push, retry, cancel, record an answer, deliver (with injected
transport faults and worker deaths), the ERP taking files and answering,
polls, a connection switch, and time passing (leases and back-offs expire).
After every step it checks what the product promises:

- each draft's status is what its current export's status says;
- no export's file reaches the ERP twice — except the one case the contract
  leaves to ``export_id`` de-duplication: a worker died between the rename
  and its record, and the ERP took the file before the re-send;
- a draft gets a second file only after staff pushed it again following a
  failure, a rejection or a cancellation;
- every file in a dropzone belongs to an export marked SENT or answered, or
  to one a dead worker still holds (in doubt until its lease expires).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from connectors.inbound import polling
from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from connectors.outbound import delivery, pushing
from connectors.services import lifecycle, overrides
from connectors.services.tenancy import local_root_of
from connectors.transports import ErrorCode, TransportError
from connectors.transports.local import LocalTransport
from orderflow.models import DraftOrder, DraftOrderLine, Organization

# Repeats weigh the draw: most runs go through, the rest meet one fault each.
FAULTS = ["none"] * 4 + ["transient", "permanent", "lost_reply", "die_before_rename", "die_after_rename"]
REPUSHED_FROM = {ERPExport.Status.FAILED, ERPExport.Status.REJECTED, ERPExport.Status.CANCELLED}


class Killed(BaseException):
    """kill -9 of the worker: nothing after this point runs in that process."""


@contextmanager
def injected(fault: str, at: int):
    """The ``at``-th upload of the run meets ``fault``; the ones before it go through."""
    real_write, real_rename = LocalTransport.write_file, LocalTransport.rename_no_overwrite
    seen = Counter()

    def write_file(self, path, data):
        seen["write"] += 1
        if seen["write"] == at and fault == "transient":
            raise TransportError("the share is briefly unavailable", code=ErrorCode.NETWORK)
        if seen["write"] == at and fault == "permanent":
            raise TransportError("permission denied", permanent=True, code=ErrorCode.PERMISSION)
        return real_write(self, path, data)

    def rename_no_overwrite(self, src, dst):
        seen["rename"] += 1
        hit = seen["rename"] == at and str(src).endswith(".tmp")
        if hit and fault == "die_before_rename":
            raise Killed
        real_rename(self, src, dst)
        if hit and fault == "die_after_rename":
            raise Killed
        if hit and fault == "lost_reply":
            raise TransportError("connection reset after the rename", code=ErrorCode.NETWORK)

    LocalTransport.write_file, LocalTransport.rename_no_overwrite = write_file, rename_no_overwrite
    try:
        yield
    finally:
        LocalTransport.write_file, LocalTransport.rename_no_overwrite = real_write, real_rename


class Lifecycle(RuleBasedStateMachine):
    root: Path  # the test's LOCAL_DROPZONE_ROOT

    @initialize()
    def start(self) -> None:
        ConnectorEvent.objects.all().delete()
        ERPExport.objects.all().delete()
        DraftOrderLine.objects.all().delete()
        DraftOrder.objects.all().delete()
        ERPConnection.objects.all().delete()
        Organization.objects.all().delete()
        self.org = Organization.objects.create(slug="acme", name="ACME")
        self.zones = 0
        self.connection = self._new_connection()
        # Two drafts are enough to meet every interaction, and keep the other rules on few exports.
        self.drafts = [self._draft(n) for n in range(2)]
        self.taken: Counter[str] = Counter()  # export id -> files the ERP took
        self.taken_unrecorded: set[str] = set()  # taken while our record still said PENDING
        self.dead_claims: set[str] = set()  # exports a killed worker held

    def _new_connection(self) -> ERPConnection:
        self.zones += 1
        base = local_root_of(self.org) / f"zone-{uuid.uuid4().hex[:12]}"
        for sub in ("inbound", "outbound"):
            (base / sub).mkdir(parents=True)
        ERPConnection.objects.filter(organization=self.org).update(is_active=False)
        relative = "/" + str(base.relative_to(local_root_of(self.org)))
        return ERPConnection.objects.create(
            organization=self.org, name=f"ERP {self.zones}", transport="local", is_active=True, max_attempts=3,
            export_path=f"{relative}/inbound", ack_path=f"{relative}/outbound", min_ack_age_seconds=0)

    def _draft(self, n: int) -> DraftOrder:
        draft = DraftOrder.objects.create(organization=self.org, order_number=f"PO-{n}",
                                          order_date=timezone.now().date(), customer_number="C-1",
                                          customer_name="Müller")
        DraftOrderLine.objects.create(draft=draft, line_number=1, sku="BOLT", quantity=Decimal("2"))
        return draft

    def _inbound_dirs(self) -> list[Path]:
        return [self.root / c.export_path.lstrip("/") for c in ERPConnection.objects.all()]

    def _export(self, n: int) -> ERPExport | None:
        exports = list(ERPExport.objects.order_by("created_at"))
        return exports[n % len(exports)] if exports else None

    # -- staff ---------------------------------------------------------------------------
    @rule(action=st.sampled_from(["push", "approve_by_save", "retry", "cancel", "confirm", "reject"]),
          n=st.integers(0, 50))
    def staff(self, action: str, n: int) -> None:
        """One of the things staff do (one rule, so Hypothesis' swarm testing never switches one off alone)."""
        if action in ("push", "approve_by_save"):
            self._push(DraftOrder.objects.get(pk=self.drafts[n % len(self.drafts)].pk), action == "push")
        elif (export := self._export(n)) is None:
            return
        elif action == "retry":
            overrides.retry_exports(exports=[export], actor="staff")
        elif action == "cancel":
            overrides.cancel_exports(exports=[export], actor="staff", reason="customer withdrew")
        else:
            overrides.record_answer(export=export, actor="staff", accepted=action == "confirm",
                                    reason="said on the phone", erp_order_number="SO-PHONE")

    def _push(self, draft: DraftOrder, by_staff: bool) -> None:
        before = draft.exports.order_by("-created_at").first()
        count = draft.exports.count()
        if by_staff:
            pushing.push_drafts(drafts=[draft], actor="staff")
        else:  # another app saves the draft as APPROVED
            draft.status = DraftOrder.Status.APPROVED
            draft.save()
        if draft.exports.count() > count:  # a new export: its predecessor must have ended without success
            assert before is None or before.status in REPUSHED_FROM, before.status

    @rule()
    def switch_connection(self) -> None:
        self.connection = self._new_connection()
        pushing.attach_waiting_exports(connection=self.connection)

    # -- the pipeline and the ERP ------------------------------------------------------------
    @rule(step=st.sampled_from(["deliver"] * 3 + ["time_passes", "poll", "poll", "erp_accepts", "erp_rejects",
                                "erp_silent"]),
          fault=st.sampled_from(FAULTS), at=st.integers(1, 4))
    def world(self, step: str, fault: str, at: int) -> None:
        if step == "deliver":
            self._deliver(fault, at)
        elif step == "time_passes":  # leases and back-offs expire; the next schedule run finds the work again
            past = timezone.now() - timedelta(seconds=1)
            ERPExport.objects.filter(status="PENDING").update(claimed_until=past, next_attempt_at=past)
        elif step == "poll":
            for conn in polling.pollable():
                polling.poll_connection(connection=conn, force=True)
        else:
            self._erp_takes_files(step.removeprefix("erp_"))

    def _deliver(self, fault: str, at: int) -> None:
        for conn in ERPConnection.objects.filter(is_active=True):
            claimed_before = set(ERPExport.objects.filter(claim_token__isnull=False).values_list("pk", flat=True))
            with injected(fault, at):
                try:
                    delivery.deliver_due_exports(connection=conn)
                except Killed:
                    held = ERPExport.objects.filter(claim_token__isnull=False, status="PENDING")
                    self.dead_claims |= {str(pk) for pk in held.values_list("pk", flat=True)
                                         if pk not in claimed_before}

    def _erp_takes_files(self, answer: str) -> None:
        for conn in ERPConnection.objects.all():
            inbound, outbound = (self.root / p.lstrip("/") for p in (conn.export_path, conn.ack_path))
            for path in sorted(inbound.glob("*.json")):
                export_id = json.loads(path.read_bytes())["export_id"]
                self.taken[export_id] += 1
                if ERPExport.objects.filter(pk=export_id, status="PENDING").exists():
                    self.taken_unrecorded.add(export_id)
                path.unlink()
                if answer == "accepts":
                    body = {"export_id": export_id, "status": "accepted", "erp_order_number": "SO-1"}
                    (outbound / f"ack_{path.stem}.json").write_text(json.dumps(body))
                elif answer == "rejects":
                    body = {"export_id": export_id, "status": "rejected", "errors": [{"message": "no"}]}
                    (outbound / f"error_{path.stem}.json").write_text(json.dumps(body))

    # -- what must always hold -------------------------------------------------------
    @invariant()
    def drafts_follow_their_current_export(self) -> None:
        for draft in DraftOrder.objects.all():
            current = draft.exports.order_by("-created_at").first()
            expected = lifecycle.DRAFT_STATUS[current.status] if current else DraftOrder.Status.NEW
            assert draft.status == expected, (draft.order_number, draft.status, current and current.status)

    @invariant()
    def no_file_reaches_the_erp_twice(self) -> None:
        present = Counter(json.loads(p.read_bytes())["export_id"] for d in self._inbound_dirs()
                          for p in d.glob("*.json"))
        for export_id in set(present) | set(self.taken):
            allowed = 2 if export_id in self.taken_unrecorded else 1
            assert present[export_id] + self.taken[export_id] <= allowed, export_id

    @invariant()
    def files_belong_to_sent_or_answered_exports(self) -> None:
        in_doubt = self.dead_claims & {str(pk) for pk in ERPExport.objects.filter(status="PENDING")
                                       .values_list("pk", flat=True)}
        for directory in self._inbound_dirs():
            for path in directory.glob("*.json"):
                export_id = json.loads(path.read_bytes())["export_id"]
                status = ERPExport.objects.get(pk=export_id).status
                assert status in ("SENT", "ACKED", "REJECTED") or export_id in in_doubt, (path.name, status)

    @invariant()
    def no_temp_file_outlives_its_run(self) -> None:
        in_doubt = {str(pk)[:8] for pk in self.dead_claims}
        for directory in self._inbound_dirs():
            for path in directory.glob("*.tmp"):
                assert path.name.removesuffix(".json.tmp")[-8:] in in_doubt, path.name


@pytest.mark.slow
def test_lifecycle_keeps_its_promises(db, tmp_path) -> None:
    Lifecycle.root = tmp_path
    run_state_machine_as_test(Lifecycle, settings=settings(
        max_examples=50, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))

