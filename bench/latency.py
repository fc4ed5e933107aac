"""What a user waits for, with a real task cluster running: approve -> file, ack file -> CONFIRMED.

Run from the repository root::

    .venv/bin/python bench/latency.py [--k 20] [--ack-gap 3 12] [--brokers orm,redis] [--transport local|sftp]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/latency.py

For each broker (django-q2's ORM broker; Redis when ``--redis-url`` answers) a child of this
script, with settings of its own:

1. creates its own database (a temp SQLite file, or ``orderflow_bench_<pid>`` on the server of a
   PostgreSQL ``DATABASE_URL``, dropped at the end) and migrates it, which creates the every-minute
   schedules; an organization, K+1 drafts and one active connection (a local dropzone under a temp
   ``LOCAL_DROPZONE_ROOT``, or ``--transport sftp`` to a local OpenSSH sshd), whose
   ``poll_interval_seconds`` is set on the row (the admin would refuse less than 10);
2. starts a real ``manage.py qcluster`` with the same database, keys, dropzone root, media root
   and broker, and waits until it has run a first task;
3. delivery: K times, ``pushing.push_drafts(drafts=[d])`` in this process (autocommit), then the
   export dir is listed every 10 ms until the file is there (the cluster's dropzone engine finds the
   due export by itself); pushes are 1-2 s apart (one untimed warm-up push first);
4. acks: K ack files, written as an ERP writes them (temp name, rename into the ack dir) at random
   gaps of 3-12 s, each timed until its draft is CONFIRMED (sampled every 50 ms).  The cluster's
   engine polls the connection each interval after its last poll; nothing here polls;
5. prints p50, p90 and max against the targets (<= 1 s, <= 15 s) and where the time went.

The parent prints both brokers side by side at the end.  A run takes 3-4 minutes per broker.
Figures, never assertions: never turn them into timed tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.latency_support import (  # noqa: E402
    Ack,
    Delivery,
    DirWatch,
    ack_table,
    decompose,
    delivery_breakdown,
    figures,
    line,
    summary_lines,
    timeline,
)
from bench.pipeline_support import own_database  # noqa: E402

TARGETS = (1.0, 15.0)  # issue 10: approve -> file p50 <= 1 s; ack visible -> CONFIRMED p50 <= 15 s
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"  # a database of its own (the scale-out test uses 13)


# -- settings and set-up (in the per-broker child) ---------------------------------------------------------
def setup_django(db_url: str, scratch: Path, redis_url: str) -> None:
    """This run's settings only: no .env, fresh keys, its own dropzone root and media, the chosen broker."""
    from cryptography.fernet import Fernet

    os.environ.update(
        DJANGO_SETTINGS_MODULE="orderflow.settings", ORDERFLOW_ENV="dev", DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50), FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ORDERFLOW_ENV_FILE=str(scratch / "no.env"), DATABASE_URL=db_url, MEDIA_ROOT=str(scratch / "media"),
        LOCAL_DROPZONE_ROOT=str(scratch / "dropzone"), LOG_LEVEL="WARNING",
    )  # fmt: skip
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    (scratch / "dropzone").mkdir()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


class Zone:
    """The connection's two directories as the transport names them and as they are on this disk."""

    def __init__(self, transport: str, scratch: Path) -> None:
        self.sshd = None
        self.fields: dict[str, Any]
        if transport == "sftp":
            from bench.run import start_sshd

            self.sshd, zone = start_sshd()
            s = zone.settings
            (self.export_remote, self.export_dir), (self.ack_remote, self.ack_dir) = (
                zone.make_dir("inbound"), zone.make_dir("outbound"))  # fmt: skip
            self.fields = dict(transport="sftp", host=s.host, port=s.port, username=s.username,
                               private_key=s.private_key, host_key=s.host_key)  # fmt: skip
        else:
            root = scratch / "dropzone" / "latency"  # organization "latency"'s own directory of the root
            self.export_dir, self.ack_dir = root / "inbound", root / "outbound"
            self.export_dir.mkdir(parents=True)
            self.ack_dir.mkdir()
            self.export_remote, self.ack_remote = "/inbound", "/outbound"
            self.fields = dict(transport="local", host="")

    def stop(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()


def make_rows(zone: Zone, n: int, poll_interval: int, min_age: int | None) -> tuple[Any, list[Any]]:
    from connectors.models import ERPConnection
    from orderflow.models import DraftOrder, DraftOrderLine, Organization

    org = Organization.objects.create(slug="latency", name="Latenz Großhandel GmbH")
    conn = ERPConnection.objects.create(
        organization=org, name="ERP", is_active=True, export_path=zone.export_remote, ack_path=zone.ack_remote,
        **zone.fields,
    )  # fmt: skip
    changes: dict[str, int] = {"poll_interval_seconds": poll_interval}  # on the row: the admin validates >= 10
    if min_age is not None:
        changes["min_ack_age_seconds"] = min_age
    ERPConnection.objects.filter(pk=conn.pk).update(**changes)
    conn.refresh_from_db()
    drafts = []
    for i in range(n):
        draft = DraftOrder.objects.create(
            organization=org, order_number=f"PO-LAT-{i:04d}", order_date=date.today(), currency="EUR",
            customer_number="K-1001", customer_name="Müller Haustechnik KG", ship_to_name="Müller Haustechnik KG",
            ship_to_street="Hafenstr. 7", ship_to_postal_code="20457", ship_to_city="Hamburg", ship_to_country="DE",
        )  # fmt: skip
        DraftOrderLine.objects.create(draft=draft, line_number=1, sku="BOLT-M8", description="Schraube M8x40",
                                      quantity=Decimal("12"), unit_price=Decimal("0.45"))  # fmt: skip
        drafts.append(draft)
    return conn, drafts


# -- the cluster ------------------------------------------------------------------------------------------
def cluster_settings() -> dict[str, Any]:
    from django_q.conf import Conf

    return {
        "broker": "redis" if Conf.REDIS and not Conf.ORM else "orm",
        "workers": Conf.WORKERS,
        "orm_poll": Conf.POLL,  # the ORM broker's pusher sleeps this long whenever the queue was empty
        "guard_cycle": Conf.GUARD_CYCLE,  # the scheduler runs every 30 s of guard cycles (django-q2's cluster.py)
    }


def claimed(draft: Any) -> bool:
    """Whether the engine has taken the draft's export: it holds a claim on it, or is done with it."""
    from connectors.models import ERPExport

    return ERPExport.objects.filter(draft=draft).exclude(claim_token=None, status="PENDING").exists()


def wait_for(check: Any, *, what: str, timeout: float, step: float, cluster: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if not cluster.running():
            raise SystemExit(f"latency: the cluster exited ({cluster.proc.returncode}) while waiting for {what}:\n"
                             f"{cluster.output[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"latency: timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def cluster_up(cluster: Any) -> float:
    """Seconds until the cluster has run a first task (a no-op enqueued here) and saved its result."""
    from django_q.models import Task
    from django_q.tasks import async_task

    started = time.monotonic()
    task_id = async_task("math.floor", 1.5, task_name="latency bench: cluster up?")
    wait_for(lambda: Task.objects.filter(id=task_id).exists(), what="the cluster's first task", timeout=90,
             step=0.05, cluster=cluster)
    return time.monotonic() - started


# -- delivery: approve -> file -----------------------------------------------------------------------------
def final_names(export_dir: Path, temp_suffix: str) -> set[str]:
    return {n for n in os.listdir(export_dir) if n.endswith(".json") and not n.endswith(temp_suffix)}


def deliver_once(draft: Any, export_dir: Path, temp_suffix: str, timeout: float) -> Delivery:
    from connectors.outbound.pushing import push_drafts

    before = final_names(export_dir, temp_suffix)
    t0 = time.perf_counter()
    counts = push_drafts(drafts=[draft])  # autocommit: lifecycle.push commits; the engine finds the export
    pushed = time.perf_counter() - t0
    if counts.done != 1:
        raise SystemExit(f"latency: push_drafts did not push the draft: {counts}")
    taken = None
    while True:
        now = time.perf_counter() - t0
        if final_names(export_dir, temp_suffix) - before:
            return Delivery(latency=now, pushed=pushed, taken=taken if taken is not None else now)
        if taken is None and claimed(draft):
            taken = time.perf_counter() - t0
        if now > timeout:
            return Delivery(latency=None, pushed=pushed, taken=taken)
        time.sleep(0.01)


def delivery_phase(drafts: list[Any], zone: Zone, temp_suffix: str, args: argparse.Namespace,
                   rng: random.Random) -> tuple[list[Delivery], float | None]:
    warm = deliver_once(drafts[0], zone.export_dir, temp_suffix, args.delivery_timeout)
    runs = []
    for i, draft in enumerate(drafts[1:], start=1):
        time.sleep(rng.uniform(*args.push_gap))
        runs.append(deliver_once(draft, zone.export_dir, temp_suffix, args.delivery_timeout))
        r = runs[-1]
        shown = f"{r.latency:.3f} s" if r.latency is not None else "not within the timeout"
        print(f"    push {i:>2}/{len(drafts) - 1}: file after {shown}", flush=True)
    return runs, warm.latency


# -- acks: ack file visible -> CONFIRMED ------------------------------------------------------------------
def ack_body(export_id: Any, filename: str, i: int) -> bytes:
    body = {"export_id": str(export_id), "export_filename": filename, "status": "accepted",
            "erp_order_number": f"SO-{780000 + i}", "message": "imported"}  # fmt: skip
    return (json.dumps(body) + "\n").encode()


def write_ack(ack_dir: Path, name: str, data: bytes) -> float:
    """As an ERP: write under a temp name the poller ignores, then rename into place; returns when."""
    temp = ack_dir / f"{name}.part"
    temp.write_bytes(data)
    os.rename(temp, ack_dir / name)
    return time.time()


def ack_phase(drafts: list[Any], zone: Zone, args: argparse.Namespace, rng: random.Random,
              cluster: Any) -> tuple[list[Ack], DirWatch, float, float]:
    from connectors.models import ERPExport
    from orderflow.models import DraftOrder

    wait_for(lambda: ERPExport.objects.filter(draft__in=drafts, status=ERPExport.Status.SENT).count() == len(drafts),
             what="every export to be SENT", timeout=60, step=0.1, cluster=cluster)
    watch = DirWatch(zone.ack_dir)
    waited = time.monotonic()
    wait_for(watch.listings, what="the poller's first listing of the ack dir", timeout=150, step=0.05,
             cluster=cluster)
    print(f"    the poller listed the ack dir (waited {time.monotonic() - waited:.0f} s for it)", flush=True)
    exports = {e.draft_id: e for e in ERPExport.objects.filter(draft__in=drafts, status=ERPExport.Status.SENT)}
    todo = [exports[d.pk] for d in drafts][: args.acks]
    t0 = time.time()
    due, acks, pending = t0 + rng.uniform(*args.ack_gap), [], {}
    while todo or pending:
        now = time.time()
        if todo and now >= due:
            export = todo.pop(0)
            name = f"ack_{export.filename.removesuffix('.json')}.json"
            written = write_ack(zone.ack_dir, name, ack_body(export.pk, export.filename, len(acks)))
            acks.append(Ack(n=len(acks) + 1, name=name, written=written))
            pending[export.draft_id] = acks[-1]
            due = now + rng.uniform(*args.ack_gap)
        if pending:
            done = DraftOrder.objects.filter(pk__in=list(pending), status=DraftOrder.Status.CONFIRMED)
            seen = time.time()
            for draft_id in done.values_list("pk", flat=True):
                ack = pending.pop(draft_id)
                ack.confirmed = seen
                print(f"    ack {ack.n:>2}/{args.acks}: CONFIRMED after {ack.latency:.1f} s", flush=True)
            for draft_id, ack in list(pending.items()):
                if seen - ack.written > args.ack_timeout:
                    print(f"    ack {ack.n:>2}: not CONFIRMED within {args.ack_timeout:g} s", flush=True)
                    del pending[draft_id]
        if not cluster.running():
            raise SystemExit(f"latency: the cluster exited during the ack phase:\n{cluster.output[-3000:]}")
        time.sleep(0.05)
    t1 = time.time()
    time.sleep(0.5)  # the last file's move may trail its commit
    watch.close()
    for ack in acks:
        ack.trace(watch)
    return acks, watch, t0, t1


# -- one broker -------------------------------------------------------------------------------------------
def run_broker(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = args.redis_url if args.broker == "redis" else ""
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix=f"orderflow-latency-{args.broker}-"))
    client = None
    try:
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url)
            client.flushdb()  # its own database number: nothing else lives there
        with own_database(scratch) as db_url:
            setup_django(db_url, scratch, redis_url)
            from django.db import connection

            from connectors.models import ConnectorEvent
            from tests.integration import child_env, manage, running

            zone = Zone(args.transport, scratch)
            try:
                conn, drafts = make_rows(zone, args.k + 1, args.poll_interval, args.min_ack_age)
                q = cluster_settings()
                db = (f"PostgreSQL {connection.pg_version // 10000} (own database {connection.settings_dict['NAME']})"
                      if connection.vendor == "postgresql" else "SQLite (own temp file, WAL)")
                print(f"\n=== broker: {q['broker'].upper()} ({redis_url or 'ORM broker on the database'}) ===")
                print(f"  database {db}; dropzone: {zone.fields['transport']} ({zone.export_dir.parent})")
                print(f"  connection: poll_interval_seconds={conn.poll_interval_seconds}, "
                      f"min_ack_age_seconds={conn.min_ack_age_seconds}, temp_suffix={conn.temp_suffix!r}")
                print(f"  cluster: {q['workers']} workers"
                      + (f", ORM broker poll {q['orm_poll']:g} s (Q_CLUSTER['poll'])" if q["broker"] == "orm" else "")
                      + f", scheduler every 30 s of {q['guard_cycle']:g} s guard cycles", flush=True)
                env = child_env(scratch / "media", ORDERFLOW_ENV="dev", LOG_LEVEL=args.cluster_log_level)
                with running(manage("qcluster"), env=env, log=scratch / "qcluster.log") as cluster:
                    up = cluster_up(cluster)
                    print(f"  qcluster up: first task done {up:.1f} s after it was enqueued", flush=True)
                    print(f"  delivery: 1 warm-up push, then {args.k} pushes "
                          f"{args.push_gap[0]:g}-{args.push_gap[1]:g} s apart", flush=True)
                    deliveries, warm = delivery_phase(drafts, zone, conn.temp_suffix, args, rng)
                    print(f"  acks: {args.acks} ack files {args.ack_gap[0]:g}-{args.ack_gap[1]:g} s apart", flush=True)
                    acks, watch, t0, t1 = ack_phase(drafts[1:], zone, args, rng, cluster)
                    failed = ConnectorEvent.objects.filter(kind="poll_failed").count()
                    log = cluster.output
                    log_tail = log[-2000:] if ("Traceback" in log or " ERROR " in log) else ""
            finally:
                zone.stop()
            return report(args, q, conn, deliveries, warm, acks, watch, t0, t1, db, log_tail,
                          failed)
    finally:
        if client is not None:
            client.flushdb()
        shutil.rmtree(scratch, ignore_errors=True)


def report(args: argparse.Namespace, q: dict[str, Any], conn: Any, deliveries: list[Delivery], warm: float | None,
           acks: list[Ack], watch: DirWatch, t0: float, t1: float,
           db: str, log_tail: str, failed_polls: int) -> dict[str, Any]:
    d = figures([r.latency for r in deliveries if r.latency is not None])
    a = figures([x.latency for x in acks if x.latency is not None])
    name = q["broker"].upper()
    print(f"\n--- {name}: approve -> file in the dropzone ({zone_kind(args)}) ---")
    print(line("approve -> file", d, TARGETS[0]))
    print(delivery_breakdown(deliveries))
    late = sum(1 for r in deliveries if r.latency is None)
    print(f"  warm-up push (untimed): {warm:.3f} s" if warm is not None else "  warm-up push: no file")
    if late:
        print(f"  ! {late} pushes had no file within {args.delivery_timeout:g} s")
    print(f"\n--- {name}: ack file visible -> draft CONFIRMED ---")
    print(line("ack visible -> CONFIRMED", a, TARGETS[1], unit_digits=1))
    missing = sum(1 for x in acks if x.latency is None)
    if missing:
        print(f"  ! {missing} acks not CONFIRMED within {args.ack_timeout:g} s (left out of the figures)")
    print(decompose(acks, conn.min_ack_age_seconds))
    print("\n".join(timeline(watch.listings(), t0, t1, conn.poll_interval_seconds)))
    print("\n".join(ack_table(acks, t0)))
    if failed_polls:
        print(f"  ! {failed_polls} polls failed (ConnectorEvent poll_failed)")
    if log_tail:
        print(f"  ! the cluster logged errors; the end of its log:\n{log_tail}")
    return {
        "broker": name, "database": db, "settings": {**q, "poll_interval_seconds": conn.poll_interval_seconds,
                                                     "min_ack_age_seconds": conn.min_ack_age_seconds},
        "delivery": d, "ack": a, "delivery_values": [r.latency for r in deliveries],
        "ack_values": [x.latency for x in acks],
    }  # fmt: skip


def zone_kind(args: argparse.Namespace) -> str:
    return "local directory" if args.transport == "local" else "SFTP to a local OpenSSH sshd"


# -- the parent ---------------------------------------------------------------------------------------------
def redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001 - not installed, not running, refused: no Redis run
        return False


def child_argv(args: argparse.Namespace, broker: str, result: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--broker", broker, "--result-file", str(result),
            "--k", str(args.k), "--acks", str(args.acks), "--push-gap", *map(str, args.push_gap),
            "--ack-gap", *map(str, args.ack_gap), "--poll-interval", str(args.poll_interval),
            "--redis-url", args.redis_url, "--transport", args.transport, "--seed", str(args.seed),
            "--ack-timeout", str(args.ack_timeout), "--delivery-timeout", str(args.delivery_timeout),
            "--cluster-log-level", args.cluster_log_level]  # fmt: skip
    if args.min_ack_age is not None:
        argv += ["--min-ack-age", str(args.min_ack_age)]
    return argv


def run_all(args: argparse.Namespace) -> int:
    from bench.run import machine

    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    started = time.perf_counter()
    print("orderflow latency bench: approve -> file in the dropzone, and ack file -> draft CONFIRMED, "
          "with a real qcluster")
    print(f"date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; machine: {machine()}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "redis" in brokers and not redis_answers(args.redis_url):
        print(f"Redis does not answer at {args.redis_url}: the Redis run is skipped")
        brokers.remove("redis")
    results = []
    with tempfile.TemporaryDirectory(prefix="orderflow-latency-") as tmp:
        for broker in brokers:
            out = Path(tmp) / f"{broker}.json"
            child = subprocess.Popen(child_argv(args, broker, out))
            try:
                code = child.wait()
            except KeyboardInterrupt:  # the child got the Ctrl-C too: let it stop its cluster, drop its database
                child.wait(120)
                raise
            except BaseException:
                child.terminate()  # SIGTERM: its handler runs the same clean-up
                child.wait(120)
                raise
            if code != 0 or not out.exists():
                print(f"\n! the {broker} run failed (exit status {code})")
                continue
            results.append(json.loads(out.read_text()))
    if results:
        print(f"\n=== summary ({zone_kind(args)}; {results[0]['database'].split(' (')[0]}; K={args.k} pushes, "
              f"{args.acks} acks; poll_interval_seconds={results[0]['settings']['poll_interval_seconds']}, "
              f"min_ack_age_seconds={results[0]['settings']['min_ack_age_seconds']}) ===")
        print("\n".join(summary_lines(results, TARGETS)))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total bench time {time.perf_counter() - started:.0f} s")
    return 0 if len(results) == len(brokers) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=20, help="timed pushes (20); also the number of acks by default")
    parser.add_argument("--acks", type=int, help="ack files (default: --k)")
    parser.add_argument("--push-gap", type=float, nargs=2, default=[1.0, 2.0], metavar=("MIN", "MAX"),
                        help="seconds between pushes, uniformly random (1 2)")
    parser.add_argument("--ack-gap", type=float, nargs=2, default=[3.0, 12.0], metavar=("MIN", "MAX"),
                        help="seconds between ack files, uniformly random (3 12)")
    parser.add_argument("--poll-interval", type=int, default=10, help="the connection's poll_interval_seconds (10)")
    parser.add_argument("--min-ack-age", type=int, default=None,
                        help="the connection's min_ack_age_seconds (default: the model's default, 10)")
    parser.add_argument("--brokers", default="orm,redis", help="orm, redis or both (orm,redis)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"flushed before and after ({DEFAULT_REDIS})")
    parser.add_argument("--transport", choices=("local", "sftp"), default="local",
                        help="the dropzone: a local directory (default) or SFTP to a local sshd")
    parser.add_argument("--seed", type=int, default=1, help="random gaps (1)")
    parser.add_argument("--ack-timeout", type=float, default=240.0, help="give up on an ack after (240 s)")
    parser.add_argument("--delivery-timeout", type=float, default=30.0, help="give up on a push after (30 s)")
    parser.add_argument("--cluster-log-level", default="WARNING", help="the qcluster's LOG_LEVEL (WARNING)")
    parser.add_argument("--broker", choices=("orm", "redis"), help=argparse.SUPPRESS)  # internal: one broker
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.acks = args.k if args.acks is None else args.acks
    if min(args.k, args.acks) < 1 or args.poll_interval < 1 or min(*args.push_gap, *args.ack_gap) < 0:
        parser.error("--k and --acks must be at least 1, --poll-interval at least 1, gaps >= 0")
    if args.acks > args.k:
        parser.error("--acks cannot exceed --k (each ack answers one delivered export)")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so `finally` cleans up
    if args.broker is None:
        return run_all(args)
    result = run_broker(args)
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
