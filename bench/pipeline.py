"""The whole pipeline's throughput, as users wait for it, against bare SFTP in the same run.

Run from the repository root::

    .venv/bin/python bench/pipeline.py [--n 1000] [--rtt-ms 20] [--only delivery|polling] [--profile]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/pipeline.py --n 300

What one round does, per link (loopback, then ``--rtt-ms`` through bench/run.py's delay relay):

1. Set-up, untimed: N drafts with one line each are bulk-created (status NEW).
2. push: ``pushing.push_drafts`` approves them, which creates one PENDING export each
   (timed as its own row, not part of delivery).
3. delivery: ``delivery.deliver_due_exports`` is called until it claims nothing more
   (200 exports per call): database → JSON → archive → atomic upload → database.
4. (a) bare paramiko and (b) OpenSSH ``sftp -b`` upload the very bytes the service
   delivered, put to ``.tmp`` then rename, into fresh directories of the same sshd.
5. polling: one valid ``ack_*.json`` per export is written into the ack dir (as the ERP
   would, an hour old); ``polling.poll_connection(force=True)`` runs until no file is
   left (500 per call): list → read → apply → move → database.
6. (c) bare paramiko lists, reads and renames the same ack files in a fresh directory.

Every timed run includes opening its connection(s).  The database is the bench's own
(a temp SQLite file, or a fresh PostgreSQL database when DATABASE_URL is set, dropped at
the end).  Only ratios measured in this run mean something; never assert timings in tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.pipeline_support import (  # noqa: E402
    Items,
    Link,
    OpenSSHBatch,
    QueryCounter,
    Run,
    SFTPCounter,
    SSHAccount,
    check_dir,
    children_cpu,
    own_database,
    paramiko_ack_loop,
    paramiko_put_loop,
    peak_rss_kb,
    print_link,
    profile_call,
    reset_peak_rss,
    rss_kb,
)
from bench.run import (  # noqa: E402
    Dropzone,
    machine,
    machine_busy,
    make_orders,
    process_cpu,
    render_all,
    start_delay_proxy,
    start_sshd,
    stop_child,
)

ACK_AGE_SECONDS = 3600  # ack files are planted an hour old, as an ERP's backlog would be


def tmpfs_dir(prefix: str) -> Path | None:
    """A scratch directory on tmpfs for the dropzone, if this machine has one.

    The server creates one file per upload, for the service and the baselines alike; on a disk file
    system that cost can dominate and swing between runs (here, ext4 without a journal scans recently
    deleted inodes on every create: sftp -b took 0.7 s or 1.8 s for the same 1,000 files). On a real
    link the server's disk is another machine's; on tmpfs both sides of each ratio pay little for it.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    os.chmod(path, 0o755)  # the sftp user (root, or this user) makes its directories below
    return path


def setup_django(db_url: str, scratch: Path) -> None:
    """Settings from this run only: no .env, fresh keys, no Redis, archived payloads in scratch, events not echoed."""
    from cryptography.fernet import Fernet

    os.environ.update(
        DJANGO_SETTINGS_MODULE="orderflow.settings", ORDERFLOW_ENV="dev", DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50), FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ORDERFLOW_ENV_FILE=str(scratch / "no.env"), DATABASE_URL=db_url, MEDIA_ROOT=str(scratch / "media"),
        LOG_LEVEL="WARNING",  # every event is also logged at INFO; 4 lines per export would flood the terminal
    )  # fmt: skip
    os.environ.pop("REDIS_URL", None)  # enqueued deliveries go to the ORM broker of this database; nobody runs them
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    # Import the services now, so the whole run uses one version of them even while people edit the tree.
    for module in ("outbound.pushing", "outbound.delivery", "inbound.polling", "work.jobs"):
        try:
            importlib.import_module(f"connectors.{module}")
        except Exception as err:  # noqa: BLE001 - reported again where the bench uses it
            print(f"  ! connectors.{module} does not import: {type(err).__name__}: {err}")


class Bench:
    def __init__(self, zone: Dropzone, scratch: Path, ports: list[int]) -> None:
        from connectors.models import ERPConnection
        from orderflow.models import Organization

        self.zone = zone
        s = zone.settings
        self.account = SSHAccount(s.host, s.port or 22, s.username, s.private_key, s.host_key)
        self.openssh = OpenSSHBatch(self.account, scratch / "openssh", ports)
        self.sftp = SFTPCounter()
        self.org = Organization.objects.create(slug="bench", name="Bench Großhandel GmbH")
        self.conn_id = ERPConnection.objects.create(
            organization=self.org, name="ERP sftp", transport="sftp", is_active=True, host=s.host, port=s.port,
            username=s.username, private_key=s.private_key, host_key=s.host_key,
            # Throughput, not the settle time: the default 10 s is a wait by design (since the poller trusts
            # only its own clock, a file first seen is read 10 s later, whatever its mtime says).
            min_ack_age_seconds=0,
        ).pk  # fmt: skip
        self.extra_pids: list[int] = []  # the relay: its CPU is ours, not "other processes"
        self.db_cpu_seen = 0.0  # PostgreSQL backend CPU measured in runs (backends come and go: see measure)
        self.connects = 0
        from django.db.backends.signals import connection_created

        connection_created.connect(self._connected, weak=False)

    def _connected(self, **kwargs: Any) -> None:
        self.connects += 1

    # -- accounting --------------------------------------------------------------------------
    def db_pid(self) -> int | None:
        """The PostgreSQL backend serving us, when it runs on this machine (so /proc has its CPU)."""
        from django.db import connection

        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        try:
            return pid if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
        except OSError:
            return None

    def ours(self) -> float:
        """CPU seconds this bench has used so far: this process, its children, sshd, the relay, and
        the PostgreSQL backend where a run could measure it."""
        total = time.process_time() + children_cpu() + (self.zone.server_cpu() if self.zone.server_cpu else 0.0)
        return total + sum(process_cpu(p, reaped_children=False) for p in self.extra_pids) + self.db_cpu_seen

    def measure(self, fn: Callable[[], Any]) -> Run:
        from django.db import connection

        self.zone.settle()
        pid = self.db_pid()
        connects0 = self.connects
        reset_peak_rss()
        start_kb = rss_kb()
        queries = QueryCounter()
        self.sftp.reset()
        sshd0 = self.zone.server_cpu() if self.zone.server_cpu else 0.0
        db0 = process_cpu(pid, reaped_children=False) if pid else None
        kids0, cpu0, wall0 = children_cpu(), time.process_time(), time.perf_counter()
        self.sftp.on = True
        try:
            with connection.execute_wrapper(queries):
                result = fn()
        finally:
            self.sftp.on = False
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0 + children_cpu() - kids0
        connects = self.connects - connects0
        db_cpu = None
        if pid and not connects:  # the same backend served the whole run (django-q's broker closes it at will)
            try:
                db_cpu = process_cpu(pid, reaped_children=False) - db0
                self.db_cpu_seen += db_cpu
            except OSError:
                pass
        self.zone.settle()
        return Run(
            wall=wall, cpu=cpu, sshd_cpu=(self.zone.server_cpu() - sshd0) if self.zone.server_cpu else 0.0,
            db_cpu=db_cpu, db_connects=connects,
            queries=queries, sftp=self.sftp.requests, sessions=self.sftp.sessions, logins=self.sftp.logins,
            rss_start_kb=start_kb, rss_peak_kb=peak_rss_kb(), result=result,
        )  # fmt: skip

    def baseline(self, link: Link, key: str, files: int, fn: Callable[[], Any]) -> None:
        run = self.measure(fn)
        run.files = files
        link.rows.setdefault(key, []).append(run)

    # -- the pipeline's steps -----------------------------------------------------------------
    def make_drafts(self, n: int, tag: str, seed: int) -> list:
        """N drafts with one line each, bulk-created as NEW (set-up: the order domain's side)."""
        from orderflow.models import DraftOrder, DraftOrderLine

        drafts, lines = [], []
        for order in make_orders(n, 1, seed=seed):
            ship = order.ship_to
            draft = DraftOrder(
                organization=self.org, order_number=f"{order.order_number} {tag}"[:100], order_date=order.order_date,
                requested_delivery_date=order.requested_delivery_date, currency=order.currency,
                customer_number=order.customer_number, customer_name=order.customer_name,
                ship_to_name=ship.name, ship_to_street=ship.street, ship_to_postal_code=ship.postal_code,
                ship_to_city=ship.city, ship_to_country=ship.country,
                notes=order.notes or "Anlieferung Mo-Fr 7-15 Uhr an Rampe 2, Lieferschein mit Bestellnummer.",
            )  # fmt: skip
            drafts.append(draft)
            lines += [
                DraftOrderLine(draft=draft, line_number=ln.line_number, sku=ln.sku, description=ln.description or "",
                               quantity=ln.quantity, unit=ln.unit, unit_price=ln.unit_price)
                for ln in order.lines
            ]  # fmt: skip
        DraftOrder.objects.bulk_create(drafts)
        DraftOrderLine.objects.bulk_create(lines)
        return list(DraftOrder.objects.filter(pk__in=[d.pk for d in drafts]))  # loaded as the admin action would

    def deliver_all(self) -> tuple[int, list[str], int]:
        """What the engine's delivery jobs do for a backlog (jobs.drain_deliveries: slices over one session)."""
        from connectors.models import ERPConnection
        from connectors.work.jobs import drain_deliveries

        conn = ERPConnection.objects.get(pk=self.conn_id)
        sent, problems, calls = 0, [], 0
        for report in drain_deliveries(conn):
            calls += 1
            sent += len(report.sent)
            problems += [*report.failed, *report.retrying]
        return sent, problems, calls

    def poll_all(self) -> tuple[Counter[str], str, int]:
        """What the engine's poll jobs do for a backlog (jobs.drain_polls: polls over one session while files are
        left)."""
        from connectors.models import ERPConnection
        from connectors.work.jobs import drain_polls

        conn = ERPConnection.objects.get(pk=self.conn_id)
        outcomes: Counter[str] = Counter()
        reports = list(drain_polls(conn))
        if not reports:
            return outcomes, "the connection was claimed by another poller", 0
        for report in reports:
            outcomes.update(report.outcomes)
        return outcomes, reports[-1].error, len(reports)

    def point_connection(self, *, port: int, export_path: str, ack_path: str) -> None:
        from connectors.models import ERPConnection

        # As an admin's edit that types the secrets again for the new endpoint (they follow their endpoint).
        conn = ERPConnection.objects.get(pk=self.conn_id)
        conn.port, conn.export_path, conn.ack_path = port, export_path, ack_path
        ERPConnection.objects.filter(pk=self.conn_id).update(port=port, export_path=export_path, ack_path=ack_path,
                                                             secrets_endpoint=conn.endpoint_digest())


def ack_items(exports: list[tuple[Any, str]]) -> Items:
    """One valid ack per export (dropzone JSON v1 §3), as an ERP writes them."""
    out = []
    for i, (export_id, filename) in enumerate(exports):
        body = {
            "export_id": str(export_id),
            "export_filename": filename,
            "status": "accepted",
            "erp_order_number": f"SO-{780000 + i}",
            "message": "imported",
        }
        out.append((f"ack_{filename.removesuffix('.json')}.json", (json.dumps(body) + "\n").encode()))
    return out


def plant(disk: Path, items: Items) -> None:
    stamp = time.time() - ACK_AGE_SECONDS
    for name, data in items:
        path = disk / name
        path.write_bytes(data)
        os.utime(path, (stamp, stamp))


def service(b: Bench, link: Link, key: str, fn: Callable[[], Any]) -> Run | None:
    """Measure one service step; a crash (another engineer's work in progress?) is reported, not fatal."""
    try:
        run = b.measure(fn)
    except Exception as err:  # noqa: BLE001 - the baselines are still worth measuring
        if key not in link.broken:
            print(f"  ! {key}: the service raised {type(err).__name__}: {str(err)[:300]}", flush=True)
        link.broken[key] = f"{type(err).__name__}: {str(err)[:200]}"
        return None
    link.rows.setdefault(key, []).append(run)
    return run


def run_round(b: Bench, link: Link, i: int, only: str) -> None:
    from connectors.models import ERPExport
    from connectors.outbound.pushing import push_drafts
    from orderflow.models import DraftOrder

    tag, seed = f"{link.key}{i}", 1000 * i + len(link.key)
    drafts = b.make_drafts(link.n, tag, seed=seed)
    ids = [d.pk for d in drafts]
    export_remote, export_disk = b.zone.make_dir(f"{tag}-inbound")
    ack_remote, ack_disk = b.zone.make_dir(f"{tag}-outbound")
    b.point_connection(port=link.port, export_path=export_remote, ack_path=ack_remote)
    account = replace(b.account, port=link.port)

    if run := service(b, link, "push", lambda: push_drafts(drafts=drafts)):
        run.files = ERPExport.objects.filter(draft_id__in=ids, status=ERPExport.Status.PENDING).count()
        if run.files != link.n:
            print(f"  ! push: {run.files} PENDING exports for {link.n} drafts")
    if run := service(b, link, "deliver", b.deliver_all):
        sent, problems, link.deliver_calls = run.result
        run.files = sent
        if sent != link.n or problems:
            print(f"  ! delivery: {sent} of {link.n} sent; {len(problems)} failed or retrying: {problems[:3]}")
    items = sorted((p.name, p.read_bytes()) for p in export_disk.iterdir())
    if items:
        check_dir(export_disk, items, what="service delivery")  # no temp file left
    if len(items) != link.n:  # the baselines still get N documents of the same shape
        items = render_all(make_orders(link.n, 1, seed=seed), validate=False)
        link.stand_in = True
    link.item_bytes = [len(d) for _, d in items]

    if only != "polling":
        remote, disk = b.zone.make_dir(f"{tag}-a")
        b.baseline(link, "a", len(items), lambda: paramiko_put_loop(account, remote, items))
        check_dir(disk, items, what="(a) bare paramiko")
        remote, disk = b.zone.make_dir(f"{tag}-b")
        batch = b.openssh.prepare(f"{tag}-b", remote, items)
        b.baseline(link, "b", len(items), lambda: b.openssh.run(batch, link.port))
        check_dir(disk, items, what="(b) sftp -b")

    if only != "delivery":
        exports = list(
            ERPExport.objects.filter(draft_id__in=ids, status=ERPExport.Status.SENT).values_list("id", "filename")
        )
        acks = ack_items(exports)
        if acks:
            plant(ack_disk, acks)
            if run := service(b, link, "poll", b.poll_all):
                outcomes, error, link.poll_calls = run.result
                run.files = DraftOrder.objects.filter(pk__in=ids, status=DraftOrder.Status.CONFIRMED).count()
                left = [p.name for p in ack_disk.iterdir() if p.is_file()]
                if error or run.files != len(acks) or left:
                    print(
                        f"  ! polling: {run.files} of {len(acks)} confirmed, {len(left)} files left, "
                        f"outcomes {dict(outcomes)}, error {error!r}"
                    )
        if len(acks) != link.n:
            acks = ack_items([(uuid.uuid4(), name) for name, _ in items])
        remote, disk = b.zone.make_dir(f"{tag}-c")
        (disk / "processed").mkdir()
        plant(disk, acks)
        b.baseline(link, "c", len(acks), lambda: paramiko_ack_loop(account, remote))
        check_dir(disk / "processed", acks, what="(c) bare paramiko ack loop")


# -- profile ---------------------------------------------------------------------------------------
def profile(b: Bench, link: Link, top: int) -> None:
    """One delivery and one poll of N under cProfile (main thread only: upload helper threads are not seen)."""
    from connectors.models import ERPExport
    from connectors.outbound.pushing import push_drafts

    drafts = b.make_drafts(link.n, "profile", seed=99)
    export_remote, _ = b.zone.make_dir("profile-inbound")
    ack_remote, ack_disk = b.zone.make_dir("profile-outbound")
    b.point_connection(port=link.port, export_path=export_remote, ack_path=ack_remote)
    push_drafts(drafts=drafts)
    paths = sysconfig.get_paths()
    strip = [f"{p}/" for p in sorted({str(REPO), paths["purelib"], paths["stdlib"]}, key=len, reverse=True)]
    print(
        "\n"
        + profile_call(b.deliver_all, title=f"Profile: delivery of {link.n} exports, loopback", top=top, strip=strip)
    )
    exports = list(ERPExport.objects.filter(draft__in=drafts).values_list("id", "filename"))
    plant(ack_disk, ack_items(exports))
    print("\n" + profile_call(b.poll_all, title=f"Profile: polling of {link.n} acks, loopback", top=top, strip=strip))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="drafts (exports, acks) per round on loopback (1000)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=20.0,
        dest="rtt_ms",
        help="round-trip time of the simulated link (20; 0 skips it)",
    )
    parser.add_argument(
        "--rtt-n",
        type=int,
        default=100,
        dest="rtt_n",
        help="drafts per round over the simulated link (100; every file costs a few round trips)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per link; the best run of each row counts (3)")
    parser.add_argument(
        "--only",
        choices=("delivery", "polling"),
        help="measure only this half (polling still delivers its exports first, unmeasured against baselines)",
    )
    parser.add_argument("--profile", action="store_true", help="then cProfile one delivery and one poll of N")
    parser.add_argument("--top", type=int, default=25, help="functions per profile (25)")
    args = parser.parse_args(argv)
    if min(args.n, args.rtt_n, args.repeat, args.top) < 1 or args.rtt_ms < 0:
        parser.error("--n, --rtt-n, --repeat and --top must be at least 1, --rtt-ms >= 0")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so `finally` cleans up
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="orderflow-pipeline-"))
    zone_root = tmpfs_dir("orderflow-pipeline-zone-")
    children = []
    try:
        with own_database(scratch) as db_url:
            setup_django(db_url, scratch)
            from django.db import connection

            sshd, zone = start_sshd()
            if zone_root:
                sshd.key_user.base_dir = zone_root
            try:
                links = [Link("loopback", "Loopback (127.0.0.1)", zone.settings.port or 22, args.n)]
                if args.rtt_ms > 0:
                    relay, far = start_delay_proxy(zone, args.rtt_ms)
                    children.append(relay)
                    links.append(
                        Link(
                            "wan",
                            f"Simulated link, {args.rtt_ms:g} ms RTT (bench/run.py's delay relay)",
                            far.settings.port or 22,
                            min(args.rtt_n, args.n),
                            args.rtt_ms,
                        )
                    )
                b = Bench(zone, scratch, [link.port for link in links])
                b.extra_pids = [c.pid for c in children]
                b.sftp.install()
                db = (
                    f"PostgreSQL {connection.pg_version // 10000} (own database {connection.settings_dict['NAME']},"
                    " dropped at the end)"
                    if connection.vendor == "postgresql"
                    else "SQLite (own temp file, deleted at the end)"
                )
                print(
                    "orderflow pipeline bench: database -> JSON -> atomic upload -> database, "
                    "and list -> read -> apply -> move -> database"
                )
                print(f"machine: {machine()}\ndatabase: {db}")
                print(f"dropzone: {zone_root or scratch} ({'tmpfs' if zone_root else 'the scratch directory'};"
                      " the server's file system is not what is measured: see bench/README.md)")
                print(f"rounds: {args.repeat} per link; each timed run opens its own connection(s)", flush=True)
                # Warm-up, untimed: imports, sshd's first logins, the database's caches.
                warm = Link("warm", "", links[0].port, min(20, args.n))
                run_round(b, warm, 0, args.only or "")
                for link in links:
                    busy0, ours0, wall0 = machine_busy(), b.ours(), time.perf_counter()
                    for i in range(args.repeat):
                        run_round(b, link, i, args.only or "")
                        print(
                            f"  {link.key} round {i + 1}/{args.repeat} done ({time.perf_counter() - started:.0f} s)",
                            flush=True,
                        )
                    spent = time.perf_counter() - wall0
                    link.busy = max(0.0, (machine_busy() - busy0) - (b.ours() - ours0)) / spent
                if args.only == "polling":
                    for link in links:
                        link.rows.pop("deliver", None)
                for link in links:
                    print_link(link, args.repeat, connection.vendor == "postgresql")
                if args.profile:
                    try:
                        profile(b, links[0], args.top)
                    except Exception as err:  # noqa: BLE001 - the figures above are printed already
                        print(f"\nprofile: the service raised {type(err).__name__}: {err}")
                b.sftp.uninstall()
            finally:
                for child in children:
                    stop_child(child)
                sshd.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if zone_root:
            shutil.rmtree(zone_root, ignore_errors=True)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
