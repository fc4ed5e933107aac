"""Delivery and ack-polling throughput of the transports, as ratios against a baseline.

Run from the repository root::

    .venv/bin/python bench/run.py [--files N] [--repeat K]      (or: make bench)

What happens (no Django database: transports and payloads are pure):

1. N realistic export documents are built, validated, named and rendered with
   ``connectors.contract.payloads`` (timed: the CPU cost of producing the files).
2. A real OpenSSH ``sshd`` (tests/servers/sshd.py) and a pyftpdlib FTP server
   (tests/servers/ftpd.py, in a child process so it does not share this
   process's GIL) are started on random loopback ports; a temp dir serves as
   the local dropzone.
3. The N files are delivered with ``put_atomic`` (stat, write temp, stat,
   rename without overwrite) per scenario, each run in a fresh directory and
   checked afterwards (untimed).  Opening the connection is part of each timed
   run.  Scenarios run round-robin for K rounds; each one's best run counts.
4. Ack polling: ``list_dir`` + ``read_file`` (+ ``parse_ack``) of N small ack
   files over one connection.
5. The SFTP rows again through a relay that adds ``--rtt-ms`` of round-trip
   time (latency only), where parallel channels can show what they are for;
   and the connection setup, step by step.

Only ratios mean something: every row is compared with "SFTP, 1 connection,
sequential" (the real default path) measured in the same run on the same
machine.  Never turn these figures into absolute timing asserts in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from connectors.contract import acks, payloads
from connectors.transports import Step, Transport, TransportSettings, get_transport
from tests.servers.ftpd import FTPDServer  # only its credentials: the server runs in a child
from tests.servers.sshd import SSHD, SSHDServer, make_client_key

Items = list[tuple[str, bytes]]

# The FTP server runs in its own process: in this one its IOLoop thread would
# compete with the client for the GIL and make FTP look slower than it is.
_FTPD_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.servers.ftpd import FTPDServer
server = FTPDServer(Path(sys.argv[2])).start()
print(server.port, flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop()
"""

# A TCP relay on loopback that holds every chunk for ``delay`` seconds in each
# direction: a WAN link's latency (not its bandwidth), in a child process too.
_DELAY_PROXY_CHILD = """
import queue, socket, sys, threading, time
target, delay = int(sys.argv[1]), float(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)

def pipe(src, dst):
    chunks = queue.Queue()
    def read():
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + delay, data))
            if not data:
                return
    def write():
        while True:
            due, data = chunks.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return
    for work in (read, write):
        threading.Thread(target=work, daemon=True).start()

def serve():
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", target))
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe(client, server)
        pipe(server, client)

threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()  # until the parent closes our stdin
"""


# -- 1. documents ---------------------------------------------------------------
_CUSTOMERS = [
    ("K-10042", "Müller Haustechnik GmbH"),
    ("K-20077", "Bäckerei Schröder & Söhne KG"),
    ("K-30311", "Nordwind Logistik AG"),
    ("K-40910", "Café Zürich Sàrl"),
]
_ITEMS = [
    ("BOLT-M8X40", "Sechskantschraube M8×40 verzinkt", "pcs", "0.12"),
    ("PIPE-CU-15", "Kupferrohr 15 mm, 5 m Stange", "m", "7.85"),
    ("VALVE-DN20", "Kugelhahn DN20 Messing", "pcs", "18.40"),
    ("SEAL-KIT-7", "Dichtungssatz 7-teilig", "set", "4.99"),
    ("GLUE-500", "Montagekleber 500 ml", "pcs", "9.5"),
    ("CABLE-3X15", "Mantelleitung NYM-J 3×1,5 mm²", "m", "0.845"),
]


def make_orders(n: int, lines: int, seed: int = 42) -> list[payloads.OrderData]:
    rnd = random.Random(seed)
    orders = []
    for i in range(n):
        number, name = rnd.choice(_CUSTOMERS)
        order_lines = []
        for ln in range(1, lines + 1):
            sku, description, unit, price = rnd.choice(_ITEMS)
            order_lines.append(
                payloads.LineData(
                    line_number=ln,
                    sku=sku,
                    description=description,
                    quantity=Decimal(rnd.choice(["1", "2.5", "10", "250.000", "12"])),
                    unit=unit,
                    unit_price=None if rnd.random() < 0.05 else Decimal(price),
                )
            )
        orders.append(
            payloads.OrderData(
                draft_id=uuid.UUID(int=rnd.getrandbits(128), version=4),
                order_number=f"PO-2026/{i:05d} ({name.split()[0]})",
                order_date=date(2026, 11, 26),
                requested_delivery_date=date(2026, 12, 1) + timedelta(days=i % 20),
                currency="EUR",
                customer_number=number,
                customer_name=name,
                ship_to=payloads.ShipTo(
                    name=name, street="Industriestraße 12", postal_code="80331", city="München", country="DE"
                ),
                notes="Bitte an Tor 3 anliefern." if i % 3 == 0 else None,
                lines=tuple(order_lines),
            )
        )
    return orders


def render_all(orders: list[payloads.OrderData], *, validate: bool) -> Items:
    """What the pipeline does per export (outbound/documents.py), minus the ORM and the mapping."""
    generated_at = datetime(2026, 11, 26, 12, 5, 1, tzinfo=UTC)
    items = []
    for order in orders:
        export_id = uuid.uuid4()
        document = payloads.build_document(
            export_id=export_id,
            generated_at=generated_at,
            org_slug="acme",
            org_name="ACME Großhandel GmbH",
            order=order,
        )
        if validate:
            payloads.validate_document(document)
        name = payloads.export_filename(
            generated_at=generated_at, org_slug="acme", order_number=order.order_number, export_id=export_id
        )
        items.append((name, payloads.render(document)))
    return items


# -- measurement ----------------------------------------------------------------
@dataclass
class Scenario:
    """One row of the table: ``run`` is timed, ``prepare`` (fresh directory) and ``check`` are not."""

    section: str
    label: str
    files: int
    run: Callable[[Any], Any]
    prepare: Callable[[int], Any] = lambda i: None
    check: Callable[[Any, Any], None] = lambda prepared, result: None
    baseline: bool = False
    note: str = ""
    zone: Dropzone | None = None  # whose server CPU to count
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # this process's CPU time, all threads
    server_cpus: list[float] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)

    def measure(self, i: int) -> None:
        prepared = self.prepare(i)
        counted = self.zone is not None and self.zone.server_cpu is not None
        server = self.zone.server_cpu() if counted else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        result = self.run(prepared)
        self.walls.append(time.perf_counter() - wall)
        self.cpus.append(time.process_time() - cpu)
        if counted:
            self.zone.settle()
            self.server_cpus.append(self.zone.server_cpu() - server)
        self.outputs.append(result)
        self.check(prepared, result)

    @property
    def best(self) -> int:
        return min(range(len(self.walls)), key=self.walls.__getitem__)

    @property
    def seconds(self) -> float:
        return self.walls[self.best]

    # CPU over all runs, not the best one: the server's counters tick only every 10 ms.
    @property
    def cpu_share(self) -> float:
        return sum(self.cpus) / sum(self.walls)

    @property
    def server_cpu_share(self) -> float | None:
        return sum(self.server_cpus) / sum(self.walls) if self.server_cpus else None

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else float("inf")


def check_uploaded(results: list, disk_dir: Path, expected: Items, temp_suffix: str) -> None:
    """Every put succeeded, every file is there with its bytes, no temp file is left."""
    errors = [(name, r) for name, r in results if not isinstance(r, str)]
    if errors:
        name, err = errors[0]
        raise SystemExit(f"bench: {len(errors)} uploads failed, first {name}: {err}")
    on_disk = {p.name for p in disk_dir.iterdir()}
    leftovers = [n for n in on_disk if n.endswith(temp_suffix)]
    missing = [n for n, _ in expected if n not in on_disk]
    if leftovers or missing or len(on_disk) != len(expected):
        raise SystemExit(
            f"bench: {disk_dir}: {len(missing)} missing, {len(leftovers)} temp files left, "
            f"{len(on_disk)} files for {len(expected)} uploads"
        )
    for name, data in (expected[0], expected[-1]):
        if (disk_dir / name).read_bytes() != data:
            raise SystemExit(f"bench: {disk_dir / name} differs from what was uploaded")


@dataclass
class Dropzone:
    """One server's settings, how its directories map to this machine's disk, and its CPU use."""

    settings: TransportSettings
    make_dir: Callable[[str], tuple[str, Path]]  # label -> (path the transport uses, same directory on disk)
    server_cpu: Callable[[], float] | None = None  # CPU seconds the server has used so far
    settle: Callable[[], None] = lambda: None  # wait until closed connections are fully accounted


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, *, reaped_children: bool) -> float:
    """utime + stime of a process (all threads), plus those of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def upload(
    section: str, label: str, zone: Dropzone, items: Items, how: str, *, channels: int = 1, **kw: Any
) -> Scenario:
    """Deliver ``items`` with put_atomic into a fresh directory per run.

    ``how``: "sequential" (the base class's put_batch: one put_atomic after another),
    "parallel" (the transport's own put_many over ``channels``, each channel
    pipelining its batch), "per-file" (open, put, close for every file).
    """

    def run(target: tuple[str, Path]) -> list:
        remote, _disk = target
        if how == "per-file":
            results = []
            for name, data in items:
                with get_transport(zone.settings) as t:
                    results.append((name, t.put_atomic(remote, name, data)))
            return results
        with get_transport(zone.settings) as t:
            if how == "sequential":
                return list(zip([name for name, _ in items], Transport.put_batch(t, remote, items), strict=True))
            t.max_lanes = channels
            return t.put_many(remote, items)

    return Scenario(
        section,
        label,
        len(items),
        run,
        prepare=lambda i: zone.make_dir(f"{how}{channels}-{i}"),
        check=lambda target, results: check_uploaded(results, target[1], items, zone.settings.temp_suffix),
        zone=zone,
        **kw,
    )


def ack_files(items: Items) -> Items:
    """One ``ack_`` file per export, as an ERP writes them (spec section 3)."""
    out = []
    for i, (name, _data) in enumerate(items):
        stem = name[: -len(".json")]
        body = (
            f'{{"export_id": "{uuid.uuid4()}", "export_filename": "{name}", "status": "accepted", '
            f'"erp_order_number": "SO-{778000 + i}", "message": "imported"}}\n'
        )
        out.append((f"ack_{stem}.json", body.encode()))
    return out


def poll(section: str, label: str, zone: Dropzone, ack_items: Items, *, batched: bool = False,
         **kw: Any) -> Scenario:
    """What a poll does per connection: list the ack dir, read and parse every ack file (nothing is moved).

    ``batched``: the files are read with ``read_many`` in batches of 32 (SFTP pipelines each batch).
    """
    remote, disk = zone.make_dir("acks")
    for name, data in ack_items:
        (disk / name).write_bytes(data)
    (disk / "README.txt").write_bytes(b"not an ack: listed, never read\n")
    for p in disk.iterdir():
        p.chmod(0o644)

    def run(_: None) -> int:
        parsed = 0
        with get_transport(zone.settings) as t:
            listed = [f for f in t.list_dir(remote) if acks.classify_name(f.name)]
            for start in range(0, len(listed), 32 if batched else 1):
                batch = listed[start:start + (32 if batched else 1)]
                if batched:
                    bodies = t.read_many(remote, batch, max_bytes=acks.ACK_MAX_BYTES)
                else:
                    bodies = [t.read_file(t.join(remote, f.name), max_bytes=acks.ACK_MAX_BYTES) for f in batch]
                for f, body in zip(batch, bodies, strict=True):
                    if isinstance(body, Exception):
                        raise body
                    acks.parse_ack(f.name, body)
                    parsed += 1
        return parsed

    def check(_: None, parsed: int) -> None:
        if parsed != len(ack_items):
            raise SystemExit(f"bench: {label}: polled {parsed} acks, expected {len(ack_items)}")

    return Scenario(section, label, len(ack_items), run, check=check, zone=zone, **kw)


def connect(section: str, label: str, zone: Dropzone, **kw: Any) -> Scenario:
    """Open and close one connection; ``outputs`` keeps each run's steps."""

    def run(_: None) -> list[Step]:
        with get_transport(zone.settings) as t:
            pass
        return t.steps

    return Scenario(section, label, 1, run, zone=zone, **kw)


# -- servers ----------------------------------------------------------------------
def start_sshd() -> tuple[SSHDServer, Dropzone]:
    if not os.path.exists(SSHD):
        raise SystemExit(f"bench: {SSHD} not found: install openssh-server")
    server = SSHDServer()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    key = make_client_key("ed25519")
    server.authorize(key.public_line)
    settings = TransportSettings(
        kind="sftp",
        host=server.host,
        port=server.port,
        username=server.key_user.name,
        private_key=key.private_key,
        host_key=server.host_keys["ed25519"],
        connect_timeout=10.0,
        operation_timeout=30.0,
    )

    def make_dir(label: str) -> tuple[str, Path]:
        path = server.key_user.fresh_dir(label)
        return str(path), path  # no chroot: the server path is the disk path

    def settle() -> None:
        # Each connection is a child of the listener (its SFTP server a grandchild); their CPU
        # time lands in the listener's cutime/cstime once reaped, so wait for that.
        deadline = time.monotonic() + 2.0
        while server.connection_pids() and time.monotonic() < deadline:
            time.sleep(0.005)

    listener = server._proc.pid  # the only way to its CPU counters

    return server, Dropzone(settings, make_dir, lambda: process_cpu(listener, reaped_children=True), settle)


def start_child(code: str, *args: str, what: str) -> tuple[subprocess.Popen, int]:
    """A Python child that prints the loopback port it listens on as its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        stop_child(proc)
        raise SystemExit(f"bench: {what} did not start")
    return proc, int(line)


def start_ftpd(home: Path) -> tuple[subprocess.Popen, Dropzone]:
    proc, port = start_child(_FTPD_CHILD, str(REPO), str(home), what="the FTP server")
    settings = TransportSettings(
        kind="ftp",
        host="127.0.0.1",
        port=port,
        username=FTPDServer.user,
        password=FTPDServer.password,
        connect_timeout=10.0,
        operation_timeout=30.0,
    )

    def make_dir(label: str) -> tuple[str, Path]:
        path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=home))
        path.chmod(0o755)
        return f"/{path.name}", path

    return proc, Dropzone(settings, make_dir, lambda: process_cpu(proc.pid, reaped_children=False))


def start_delay_proxy(zone: Dropzone, rtt_ms: float) -> tuple[subprocess.Popen, Dropzone]:
    """``zone`` reached through a relay adding ``rtt_ms`` of round-trip time."""
    assert zone.settings.port is not None
    proc, port = start_child(_DELAY_PROXY_CHILD, str(zone.settings.port), str(rtt_ms / 2000), what="the delay proxy")
    return proc, replace(zone, settings=replace(zone.settings, port=port))


def stop_child(proc: subprocess.Popen) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def local_zone(root: Path) -> Dropzone:
    settings = TransportSettings(kind="local", local_root=str(root))

    def make_dir(label: str) -> tuple[str, Path]:
        path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=root))
        return f"/{path.name}", path

    return Dropzone(settings, make_dir)


# -- report -----------------------------------------------------------------------
def print_table(scenarios: list[Scenario]) -> None:
    width = max(len(sc.label) for sc in scenarios) + 2
    header = (
        f"{'scenario':<{width}}{'files':>6}{'seconds':>9}{'files/s':>9}{'vs baseline':>13}{'(median)':>10}"
        f"{'CPU client':>11}{'server':>7}   runs (s)"
    )
    section = None
    base = scenarios[0]
    for sc in scenarios:
        if sc.section != section:
            section = sc.section
            base = next(b for b in scenarios if b.section == section and b.baseline)
            print(f"\n{section}")
            print(header)
            print("-" * (len(header) + 14))
        ratio = "1.00x base" if sc.baseline else f"{sc.rate / base.rate:.2f}x"
        # Rounds are interleaved: the ratio within each round cancels slow drifts in the machine's load.
        paired = sorted((base.walls[i] / base.files) / (sc.walls[i] / sc.files) for i in range(len(sc.walls)))
        median = "" if sc.baseline else f"{statistics.median(paired):.2f}x"
        runs = " ".join(f"{t:.3f}" for t in sc.walls)
        server = "-" if sc.server_cpu_share is None else f"{100 * sc.server_cpu_share:.0f}%"
        print(
            f"{sc.label:<{width}}{sc.files:>6}{sc.seconds:>9.3f}{sc.rate:>9.1f}{ratio:>13}{median:>10}"
            f"{100 * sc.cpu_share:>10.0f}%{server:>7}   {runs}" + (f"  ({sc.note})" if sc.note else "")
        )


def print_setup(scenarios: list[Scenario]) -> None:
    print("\nConnection setup (open + close; best run, with its steps as the transport records them)")
    for sc in scenarios:
        detail = ", ".join(f"{s.name} {1000 * s.seconds:.0f}" for s in sc.outputs[sc.best])
        print(f"  {sc.label:<9}{1000 * sc.seconds:>7.1f} ms   steps (ms): {detail}")


def machine() -> str:
    try:
        ssh = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False).stderr.split(",")[0].strip()
    except OSError:
        ssh = "sshd ?"
    return (
        f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}, {ssh}, "
        f"paramiko {version('paramiko')}, pyftpdlib {version('pyftpdlib')}"
    )


def machine_busy() -> float:
    """CPU seconds all cores have been busy since boot (from /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / _TICK  # guest time is already in user/nice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="documents per scenario (default 300)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds; the best run of each scenario counts (default 5)"
    )
    parser.add_argument("--lines", type=int, default=5, help="order lines per document (default 5)")
    parser.add_argument(
        "--per-file",
        type=int,
        default=20,
        dest="per_file",
        help="files for the connection-per-file rows (default 20: SFTP manages ~9 a second)",
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=4.0,
        dest="rtt_ms",
        help="round-trip time the simulated WAN link adds (default 4 ms; 0 skips that section)",
    )
    parser.add_argument(
        "--rtt-files",
        type=int,
        default=40,
        dest="rtt_files",
        help="files per scenario over the simulated WAN link (default 40)",
    )
    args = parser.parse_args(argv)
    if min(args.files, args.repeat, args.lines, args.per_file, args.rtt_files) < 1 or args.rtt_ms < 0:
        parser.error("--files, --repeat, --lines, --per-file and --rtt-files must be at least 1, --rtt-ms >= 0")
    n, k = args.files, args.repeat
    # A plain `kill` must still stop sshd and the FTP child: turn SIGTERM into SystemExit, so `finally` runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.perf_counter()
    print(f"orderflow bench: N={n} documents x {args.lines} lines, best of {k} interleaved rounds")
    print(f"machine: {machine()}")

    orders = make_orders(n, args.lines)
    items = render_all(orders, validate=True)
    print(f"documents: {n} files, {sum(len(d) for _, d in items) / n:.0f} bytes on average")
    up = "Delivery: put_atomic (temp file, size checked, renamed, never overwriting); connection opened in the timing"
    acked = "Ack polling: list_dir, then read_file + parse_ack per ack file, one connection"
    setup = "Connection setup"

    scratch = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    sshd: SSHDServer | None = None
    children: list[subprocess.Popen] = []  # the FTP server, the delay proxy
    try:
        (scratch / "local").mkdir()
        (scratch / "ftp-home").mkdir()
        local = local_zone(scratch / "local")
        sshd, sftp = start_sshd()
        ftpd, ftp = start_ftpd(scratch / "ftp-home")
        children.append(ftpd)
        few = items[: min(args.per_file, n)]
        ack_items = ack_files(items)
        cpu_only = "CPU only, no I/O"
        scenarios = [
            Scenario(
                up,
                "render: build+name+render (no schema)",
                n,
                lambda _: render_all(orders, validate=False),
                note=cpu_only,
            ),
            Scenario(
                up, "render: build+validate+name+render", n, lambda _: render_all(orders, validate=True), note=cpu_only
            ),
            upload(up, "local dir, put_atomic loop (fsync)", local, items, "sequential"),
            upload(up, "SFTP, 1 connection, sequential", sftp, items, "sequential", baseline=True),
            upload(up, "SFTP, 1 connection, pipelined, 1 channel", sftp, items, "parallel", channels=1),
            upload(up, "SFTP, 1 connection, put_many 2 channels", sftp, items, "parallel", channels=2),
            upload(up, "SFTP, 1 connection, put_many 4 channels", sftp, items, "parallel", channels=4,
                   note="the transport's default"),
            upload(up, "SFTP, 1 connection per file", sftp, few, "per-file", note="anti-pattern, forbidden"),
            upload(up, "FTP, 1 connection, sequential", ftp, items, "sequential"),
            upload(up, "FTP, 1 connection per file", ftp, few, "per-file", note="anti-pattern, forbidden"),
            poll(acked, "local dir", local, ack_items),
            poll(acked, "SFTP, 1 connection", sftp, ack_items, baseline=True),
            poll(acked, "SFTP, 1 connection, read_many (pipelined)", sftp, ack_items, batched=True),
            poll(acked, "FTP, 1 connection", ftp, ack_items),
        ]
        setups = [connect(setup, "SFTP", sftp, baseline=True), connect(setup, "FTP", ftp)]
        if args.rtt_ms > 0:
            proxy, far = start_delay_proxy(sftp, args.rtt_ms)
            children.append(proxy)
            wan = f"Over a simulated WAN link: SFTP through a relay adding {args.rtt_ms:g} ms round-trip time"
            some, some_acks = items[: args.rtt_files], ack_items[: args.rtt_files]
            scenarios += [
                upload(wan, "SFTP, 1 connection, sequential", far, some, "sequential", baseline=True),
                upload(wan, "SFTP, 1 connection, pipelined, 1 channel", far, some, "parallel", channels=1),
                upload(wan, "SFTP, 1 connection, put_many 2 channels", far, some, "parallel", channels=2),
                upload(wan, "SFTP, 1 connection, put_many 4 channels", far, some, "parallel", channels=4),
                poll(wan, "ack polling, SFTP, 1 connection", far, some_acks),
                poll(wan, "ack polling, SFTP, read_many (pipelined)", far, some_acks, batched=True),
            ]
            setups.append(connect(setup, "SFTP+WAN", far))
        # Warm-up (untimed): sshd's first connections, paramiko's imports, the page cache.
        for warm in (
            upload(up, "", sftp, items[:20], "parallel", channels=2),
            upload(up, "", ftp, items[:20], "sequential"),
        ):
            warm.measure(0)
        # Round-robin, so a load spike from elsewhere on the machine hits every scenario alike.
        def ours() -> float:
            children_cpu = sum(process_cpu(c.pid, reaped_children=False) for c in children)
            return time.process_time() + sftp.server_cpu() + children_cpu

        busy0, ours0, wall0 = machine_busy(), ours(), time.perf_counter()
        for i in range(k):
            for sc in scenarios + setups:
                sc.measure(i)
            print(f"  round {i + 1}/{k} done ({time.perf_counter() - started:.0f} s)", flush=True)
        # What else ran on the machine meanwhile (other users, test suites): the noise in these figures.
        others = max(0.0, (machine_busy() - busy0) - (ours() - ours0)) / (time.perf_counter() - wall0)
    finally:
        for child in children:
            stop_child(child)
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(scenarios)
    print_setup(setups)
    print(
        f"\nvs baseline = files/s of the row / files/s of its section's baseline row (same run, same machine),"
        f"\n  best run against best run; (median) = the median of that ratio taken within each round."
        f"\nCPU = CPU time / wall time over all runs of the row; client: this process (all threads), server: sshd's"
        f"\n  processes for those connections, or the FTP server's process (100% = one core; local: -)."
        f"\nmachine: {os.cpu_count()} cores; N={n}; best of {k}; total bench time {time.perf_counter() - started:.0f} s"
    )
    cores = os.cpu_count() or 1
    print(f"other processes used {100 * others:.0f}% of one core on average during the measurement ({cores} cores)")
    if others > 0.25 * cores:
        print("note: the machine was busy with other work: the ratios are noisier than usual, run again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
