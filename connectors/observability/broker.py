"""django-q2's broker as a probe or a scrape sees it: reachable, tasks waiting, clusters and workers alive.

Never hangs on a broker that does not answer: Redis is asked through a client of our own with socket
timeouts (PROBE_TIMEOUT_SECONDS; django-q2's own client has none).  The ORM broker is the database.
Cluster stats are read where django-q2 keeps them: in Redis for the Redis broker; the ORM broker keeps
them in Django's cache, which is per process here, so the web cannot see them (``clusters`` is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.utils import timezone
from django_q.conf import Conf


@dataclass(frozen=True)
class BrokerState:
    kind: str  # redis or orm
    up: bool
    queued: int | None = None  # tasks waiting in the broker's queue
    clusters: int | None = None  # django-q2 clusters that reported lately (Redis only)
    workers: int | None = None  # their worker processes
    error: str = ""  # the exception's class name: never its text, which may name hosts


def redis_url() -> str:
    url = settings.Q_CLUSTER.get("redis")
    return url if isinstance(url, str) else ""


@lru_cache(maxsize=4)
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def look(*, counts: bool = True) -> BrokerState:
    """The broker now; ``counts``: also count tasks and clusters (a scrape does, a readiness probe need not)."""
    url = redis_url()
    if not url:  # the database is the broker: it is up when the database is (readyz checks that itself)
        from django_q.models import OrmQ

        # django-q2's queue_size for the ORM broker: tasks not locked by a worker.
        queued = OrmQ.objects.filter(key=Conf.CLUSTER_NAME, lock__lte=timezone.now()).count() if counts else None
        return BrokerState("orm", up=True, queued=queued)
    client = _client(url, float(settings.PROBE_TIMEOUT_SECONDS))
    try:
        client.ping()
        queued = clusters = workers = None
        if counts:
            queued = int(client.llen(Conf.CLUSTER_NAME))
            clusters, workers = _clusters(client)
    except redis.RedisError as err:
        return BrokerState("redis", up=False, error=type(err).__name__)
    return BrokerState("redis", up=True, queued=queued, clusters=clusters, workers=workers)


def _clusters(client: redis.Redis) -> tuple[int, int]:
    """django-q2's cluster stats (each cluster writes its own every few seconds; a dead one's expires)."""
    from django_q.signing import SignedPackage

    keys = list(client.scan_iter(match=f"{Conf.Q_STAT}:*", count=100))
    clusters = workers = 0
    for pack in client.mget(keys) if keys else []:
        if not pack:
            continue
        try:
            stat = SignedPackage.loads(pack)
        except Exception:  # a bad signature (another site's SECRET_KEY), or a version's pickle we cannot read
            continue
        clusters += 1
        workers += len(getattr(stat, "workers", None) or [])
    return clusters, workers
