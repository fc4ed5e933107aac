"""Two delivery workers racing for the same exports: each export is claimed by exactly one.

Threads, each with its own database connection, released together from a
barrier so both UPDATEs meet on the same rows.  On PostgreSQL the second
UPDATE waits for the first one's row locks and must then re-check its
conditions against the committed claim.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from connectors.models import ERPConnection, ERPExport
from connectors.outbound import delivery


@pytest.mark.parametrize("rounds", [5])
def test_racing_claims_never_share_an_export(transactional_db, make_draft, make_connection, tmp_path,
                                             rounds: int) -> None:
    conn: ERPConnection = make_connection(transport="local", export_path="/")
    draft = make_draft()
    for _ in range(rounds):
        ERPExport.objects.all().delete()
        ERPExport.objects.bulk_create([ERPExport(draft=draft, connection=conn) for _ in range(200)])
        barrier = threading.Barrier(2)
        claimed: list[list] = [[], []]

        def worker(slot: int, barrier: threading.Barrier = barrier, claimed: list[list] = claimed) -> None:
            try:
                barrier.wait(timeout=10)
                claimed[slot] = [e.pk for e in delivery.claim_due_exports(connection=conn)]
            finally:
                connection.close()  # this thread's own connection

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        first, second = set(claimed[0]), set(claimed[1])
        assert not first & second, f"{len(first & second)} exports claimed twice"
        assert len(first | second) == 200
        assert set(ERPExport.objects.values_list("attempts", flat=True)) == {1}
