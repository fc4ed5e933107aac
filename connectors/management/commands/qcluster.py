"""``qcluster``: django-q2's cluster, and the dropzone engine in the cluster's main process (docs/work-model.md).

django-q2's own command starts the cluster (its workers run the short scheduled tasks) and then only waits
for it.  This one also runs the engine, which does every partner's network I/O, many partners at once, in
that otherwise idle process.  SIGINT or SIGTERM stops both: the engine within a few seconds (jobs in flight
finish or are cut, their claims released), the cluster as django-q2 does.  ``CONNECTOR_SESSIONS=0`` runs the
cluster alone.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from connectors.work.engine import Engine


class Command(qcluster.Command):
    help = "Starts a Django Q cluster and the dropzone engine (docs/work-model.md)."

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("run_once") or settings.CONNECTOR_SESSIONS <= 0:
            return super().handle(*args, **options)
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        settings.SECRET_KEY  # noqa: B018 - as django-q2's command: refuse to start without it
        cluster = Cluster()
        engine = Engine()
        stopping: list[threading.Thread] = []

        def stop(signum: int, frame: object) -> None:
            engine.stop()
            if not stopping:  # the cluster's stop joins its processes: not in the signal handler
                stopping.append(threading.Thread(target=cluster.stop, name="cluster-stop"))
                stopping[0].start()

        cluster.start()  # forks django-q2's processes before any thread of the engine exists
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        sentinel = cluster.sentinel
        if sentinel is not None and sentinel.is_alive():
            # The cluster ending by itself (its sentinel died) ends the engine too: one process, one fate.
            threading.Thread(target=lambda: (sentinel.join(), engine.stop()), name="cluster-watch",
                             daemon=True).start()
            engine.run()
        for thread in stopping:
            thread.join()
