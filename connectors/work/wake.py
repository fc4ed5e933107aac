"""How the rest of the code asks for work to be done soon: a delivery or a poll of one connection.

Each request takes effect when the caller's transaction commits.
"""

from __future__ import annotations

from django.db import transaction

DELIVER_TASK = "connectors.tasks.deliver_connection"


def enqueue_delivery(connection_id: int) -> None:
    """Ask a worker to deliver this connection's due exports, once the current transaction commits."""

    def send() -> None:
        from django_q.tasks import async_task

        async_task(DELIVER_TASK, connection_id, task_name=f"deliver connection {connection_id}")

    transaction.on_commit(send)


def enqueue_poll(connection_id: int, *, force: bool = False) -> None:
    """Ask a worker to poll this connection (``force``: due or not), once the current transaction commits."""

    def send() -> None:
        from django_q.tasks import async_task

        async_task("connectors.tasks.poll_connection", connection_id, force=force,
                   task_name=f"poll connection {connection_id}")

    transaction.on_commit(send)
