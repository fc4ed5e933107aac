"""Helpers of bench/pipeline.py: its own database, counters, the three bare baselines, the report.

Nothing here imports Django models at import time: ``own_database`` runs
before ``django.setup()``.  The baselines use paramiko and OpenSSH directly,
never the project's transports, so they show what the wire allows.
"""

from __future__ import annotations

import base64
import io
import os
import re
import resource
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import paramiko
from paramiko.sftp import CMD_NAMES

Items = list[tuple[str, bytes]]
ROWS = {  # key -> label
    "push": "push: push_drafts() -> PENDING exports",
    "deliver": "delivery: service, deliver_due_exports() until done",
    "a": "delivery: (a) bare paramiko, put .tmp + rename",
    "b": "delivery: (b) OpenSSH sftp -b, put .tmp + rename",
    "poll": "polling: service, poll_connection() until done",
    "c": "polling: (c) bare paramiko, list + read + rename",
}


# -- the bench's own database --------------------------------------------------------
@contextmanager
def own_database(scratch: Path) -> Iterator[str]:
    """Yield a DATABASE_URL that belongs to this run only; dropped or deleted afterwards.

    Without DATABASE_URL in the environment: a SQLite file in ``scratch``.  With a
    PostgreSQL URL: a new database ``orderflow_bench_<pid>`` on that server, created and
    dropped through the maintenance database ``postgres``, so the URL's own database
    (a test suite's, perhaps) is never touched.
    """
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        yield f"sqlite:///{scratch / 'bench.sqlite3'}"
        return
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"bench: DATABASE_URL must be PostgreSQL (or unset for SQLite), not {parts.scheme}://")
    import psycopg
    from psycopg import sql

    name = f"orderflow_bench_{os.getpid()}"
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        try:  # Django may not even be configured, if the run failed early
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - DROP ... WITH (FORCE) ends any session left
            pass
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- counters --------------------------------------------------------------------------
class QueryCounter:
    """A ``connection.execute_wrapper``: statements by their first word, and the time spent in them.

    COMMIT never passes through a cursor (Django calls the driver), so it is not counted; BEGIN
    is counted on SQLite only (Django sends ``BEGIN IMMEDIATE`` itself there, psycopg does it
    implicitly on PostgreSQL); SAVEPOINT/RELEASE are counted.
    """

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.seconds = 0.0

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.kinds[sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"] += 1

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


class SFTPCounter:
    """Counts SFTP requests by type, SFTP sessions and SSH logins made through paramiko while ``on``.

    Every request of paramiko's SFTPClient (blocking, pipelined writes, prefetched reads,
    the close of a file) goes through ``SFTPClient._async_request``; the service's own
    batches through ``sftp_pipeline._pipelined``.  A request is not a
    round trip: pipelined writes and prefetches share one; the 20 ms link's seconds per file
    ÷ RTT shows the round trips.
    """

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.sessions = 0
        self.logins = 0
        self.on = False
        self._lock = threading.Lock()
        self._originals: list[tuple[type, str, Any]] = []

    def install(self) -> None:
        from connectors.transports import sftp_pipeline

        counter = self

        def wrap(cls: type, name: str, count: Callable[..., None]) -> None:
            original = getattr(cls, name)
            self._originals.append((cls, name, original))

            def counted(obj: Any, *args: Any, **kwargs: Any) -> Any:
                if counter.on:
                    with counter._lock:
                        count(*args)
                return original(obj, *args, **kwargs)

            setattr(cls, name, counted)

        wrap(
            paramiko.SFTPClient,
            "_async_request",
            lambda fileobj, t, *a: self.requests.update([CMD_NAMES.get(t, str(t)).upper()]),
        )
        # The service's batches frame their requests themselves (one write per batch).
        wrap(
            sftp_pipeline,
            "_pipelined",
            lambda requests: self.requests.update(CMD_NAMES.get(t, str(t)).upper() for t, _args in requests),
        )
        wrap(paramiko.SFTPClient, "__init__", lambda *a: setattr(self, "sessions", self.sessions + 1))
        wrap(paramiko.Transport, "start_client", lambda *a: setattr(self, "logins", self.logins + 1))

    def uninstall(self) -> None:
        for cls, name, original in reversed(self._originals):
            setattr(cls, name, original)
        self._originals.clear()

    def reset(self) -> None:
        self.requests, self.sessions, self.logins = Counter(), 0, 0


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to the current RSS; Linux only ("5" > clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kb() -> int:
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    """VmHWM (since the last reset), or the lifetime peak where /proc cannot reset it."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def children_cpu() -> float:
    """CPU seconds of the reaped child processes (``sftp`` and its ``ssh``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def describe(counts: Counter[str], per: int) -> str:
    """Per item: "6.0 (STAT 2, OPEN 1, …)", most frequent first."""
    total = sum(counts.values())
    if not total or not per:
        return "0"
    parts = ", ".join(f"{k} {v / per:.2g}" for k, v in counts.most_common())
    return f"{total / per:.1f} ({parts})" if total >= per else f"{total / per:.2g} ({parts})"


# -- baselines -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSHAccount:
    """What both bare clients need: where, who, the private key file and the pinned host key."""

    host: str
    port: int
    username: str
    private_key: str = field(repr=False)
    host_key: str = ""  # "ssh-ed25519 AAAA…"


@contextmanager
def paramiko_sftp(account: SSHAccount) -> Iterator[paramiko.SFTPClient]:
    """One SSH connection and one SFTP session, the pinned host key checked before logging in.

    ``TCP_NODELAY`` as SFTPTransport sets it, so the comparison is about the code above the socket.
    """
    sock = socket.create_connection((account.host, account.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        key_type, blob = account.host_key.split()[:2]
        options = transport.get_security_options()
        options.key_types = [key_type] + [k for k in options.key_types if k != key_type]
        transport.start_client(timeout=10)
        if transport.get_remote_server_key().asbytes() != base64.b64decode(blob):
            raise SystemExit("bench: the server's host key is not the pinned one")
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(account.private_key))
        transport.auth_publickey(account.username, key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        transport.close()


def paramiko_put_loop(account: SSHAccount, remote_dir: str, items: Items) -> int:
    """(a) One session; per file: write ``name.tmp`` (pipelined), rename it to ``name``."""
    with paramiko_sftp(account) as sftp:
        for name, data in items:
            temp = f"{remote_dir}/{name}.tmp"
            with sftp.open(temp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            sftp.rename(temp, f"{remote_dir}/{name}")
    return len(items)


def paramiko_ack_loop(account: SSHAccount, ack_dir: str) -> int:
    """(c) One session: list the ack dir, then per ``ack_*.json``: read it (its listed size), move it to processed/."""
    done = 0
    with paramiko_sftp(account) as sftp:
        for attrs in sftp.listdir_attr(ack_dir):
            name = attrs.filename
            if not (name.startswith("ack_") and name.endswith(".json")):
                continue
            path = f"{ack_dir}/{name}"
            with sftp.open(path, "rb") as fh:
                data = fh.read(attrs.st_size or 0)
            if len(data) != attrs.st_size:
                raise SystemExit(f"bench: short read of {path}")
            sftp.rename(path, f"{ack_dir}/processed/{name}")
            done += 1
    return done


class OpenSSHBatch:
    """(b) OpenSSH's ``sftp -b``: the same key (a 0600 file) and the pinned host key (a known_hosts file)."""

    def __init__(self, account: SSHAccount, workdir: Path, ports: list[int]) -> None:
        self.account = account
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "id_ed25519"
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(account.private_key.strip() + "\n")
        self.known_hosts = workdir / "known_hosts"
        key_type, blob = account.host_key.split()[:2]
        self.key_type = key_type
        self.known_hosts.write_text("".join(f"[{account.host}]:{p} {key_type} {blob}\n" for p in ports))

    def command(self, batch: Path, port: int) -> list[str]:
        return [
            "sftp", "-q", "-b", str(batch), "-F", "/dev/null", "-P", str(port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlgorithms={self.key_type}", "-o", "UpdateHostKeys=no",
            f"{self.account.username}@{self.account.host}",
        ]  # fmt: skip

    def prepare(self, label: str, remote_dir: str, items: Items) -> Path:
        """Untimed: the files on local disk and the batch file (put to .tmp, then rename)."""
        local = self.dir / label
        local.mkdir()
        lines = []
        for name, data in items:
            if not re.fullmatch(r"[\w.\-]+", name):
                raise SystemExit(f"bench: {name!r} needs quoting rules this batch writer does not have")
            (local / name).write_bytes(data)
            lines += [
                f'put "{local / name}" "{remote_dir}/{name}.tmp"',
                f'rename "{remote_dir}/{name}.tmp" "{remote_dir}/{name}"',
            ]
        batch = self.dir / f"{label}.batch"
        batch.write_text("\n".join(lines) + "\n")
        return batch

    def run(self, batch: Path, port: int) -> int:
        done = subprocess.run(
            self.command(batch, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"bench: sftp -b failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return sum(1 for line in batch.read_text().splitlines() if line.startswith("put "))


def check_dir(disk: Path, expected: Items, *, what: str) -> None:
    """Every file there with its bytes, nothing else (no temp file left)."""
    on_disk = {p.name for p in disk.iterdir() if p.is_file()}
    names = {n for n, _ in expected}
    if on_disk != names:
        raise SystemExit(
            f"bench: {what}: {len(names - on_disk)} missing, {len(on_disk - names)} unexpected files in {disk}"
        )
    for name, data in (expected[0], expected[-1]):
        if (disk / name).read_bytes() != data:
            raise SystemExit(f"bench: {what}: {disk / name} differs")


# -- profile ------------------------------------------------------------------------------------
def profile_call(fn: Callable[[], Any], *, title: str, top: int, strip: list[str]) -> str:
    """cProfile ``fn`` (this thread only) and return the top functions by cumulative time, paths shortened."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(fn)
    wall = time.perf_counter() - started
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    text = out.getvalue()
    for prefix in strip:
        text = text.replace(prefix, "")
    body = text[text.index("   ncalls") :] if "   ncalls" in text else text
    return (
        f"{title} ({wall:.2f} s under the profiler; cumulative time, this thread only: what the transport's "
        f"lanes do in their own threads shows here as lock waits)\n{body.rstrip()}"
    )


# -- report -------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One timed run: wall and CPU time, what it cost the database and the wire, peak memory."""

    wall: float
    cpu: float  # this process, all threads, plus reaped children (sftp, ssh)
    sshd_cpu: float
    db_cpu: float | None  # the PostgreSQL backend; None on SQLite (in-process: part of cpu) or after a reconnect
    db_connects: int  # database connections opened during the run
    queries: QueryCounter
    sftp: Counter[str]
    sessions: int
    logins: int
    rss_start_kb: int
    rss_peak_kb: int
    result: Any = None
    files: int = 0  # what the run achieved: files uploaded, exports SENT, drafts CONFIRMED


@dataclass
class Link:
    key: str  # "loopback" | "wan"
    title: str
    port: int
    n: int
    rtt_ms: float = 0.0
    rows: dict[str, list[Run]] = field(default_factory=dict)
    item_bytes: list[int] = field(default_factory=list)
    deliver_calls: int = 0
    poll_calls: int = 0
    busy: float = 0.0  # CPU share other processes used meanwhile (cores)
    broken: dict[str, str] = field(default_factory=dict)  # service step -> its error
    stand_in: bool = False  # the baselines used bench/run.py's documents: the service delivered too few


def rate(r: Run) -> float:
    return r.files / r.wall if r.wall > 0 else 0.0


def best(runs: list[Run]) -> Run:
    return max(runs, key=rate)


def print_link(link: Link, rounds: int, postgres: bool) -> None:
    rows = {k: v for k, v in link.rows.items() if v}
    wan = link.rtt_ms > 0
    print(
        f"\n{link.title}: N={link.n} per round, best of {rounds} rounds, "
        f"files {statistics.mean(link.item_bytes):.0f} bytes on average"
    )
    for key, error in link.broken.items():
        print(f"  ! {key}: the service broke ({error}); its rows are missing or partial")
    if link.stand_in:
        print("  ! the service delivered fewer than N files: the baselines used bench/run.py's documents")
    if not rows:
        return
    width = max(len(ROWS[k]) for k in rows) + 2
    header = (
        f"{'scenario':<{width}}{'files':>6}{'seconds':>9}{'files/s':>9}"
        f"{'RTT/file' if wan else '':>9}{'CPU here':>9}{'sshd':>6}{'pg':>6}   runs (s)"
    )
    print(header)
    print("-" * (len(header) + 20))
    for key, runs in rows.items():
        r = best(runs)
        rtts = f"{r.wall / max(r.files, 1) / (link.rtt_ms / 1000):.1f}" if wan and key != "push" else ""
        walls = sum(x.wall for x in runs)
        cpu = f"{100 * sum(x.cpu for x in runs) / walls:.0f}%"
        sshd = f"{100 * sum(x.sshd_cpu for x in runs) / walls:.0f}%"
        known = [x for x in runs if x.db_cpu is not None]
        pg = (
            "-"
            if not postgres
            else "n/a"
            if not known
            else f"{100 * sum(x.db_cpu or 0 for x in known) / sum(x.wall for x in known):.0f}%"
        )
        print(
            f"{ROWS[key]:<{width}}{r.files:>6}{r.wall:>9.3f}{rate(r):>9.1f}{rtts:>9}{cpu:>9}{sshd:>6}"
            f"{pg:>6}   " + " ".join(f"{x.wall:.3f}" for x in runs)
        )

    waits = []
    if "deliver" in rows:
        r = best(rows["deliver"])
        waits.append(f"{r.files} approved drafts -> SENT in {r.wall:.2f} s = {rate(r):.0f} exports/s")
    if "poll" in rows:
        r = best(rows["poll"])
        waits.append(f"{r.files} ack files -> CONFIRMED in {r.wall:.2f} s = {rate(r):.0f} acks/s")
    if waits:
        print("what users wait for (best round): " + "; ".join(waits))

    print(
        "\nservice / bare = files/s of the service over files/s of the baseline (best against best; "
        "median of the ratio within each round)"
    )
    for svc, base, what in (("deliver", "a", "delivery"), ("deliver", "b", "delivery"), ("poll", "c", "polling")):
        if svc in rows and base in rows:
            s, o = rows[svc], rows[base]
            paired = statistics.median(rate(s[i]) / rate(o[i]) for i in range(min(len(s), len(o))))
            print(
                f"  {what:<9} service / {ROWS[base].split(': ', 1)[1]:<40}"
                f"{rate(best(s)) / rate(best(o)):>6.2f}x   (median {paired:.2f}x)"
            )

    print("\nper file, service (median round): database statements, SFTP requests (paramiko), connections")
    for key, unit in (("push", "draft"), ("deliver", "export"), ("poll", "ack")):
        if key not in rows:
            continue
        r = sorted(rows[key], key=lambda x: x.wall)[len(rows[key]) // 2]
        per = max(r.files, 1)
        print(
            f"  {key:<8} queries/{unit}: {describe(r.queries.kinds, per)}; in the database driver "
            f"{100 * r.queries.seconds / r.wall:.0f}% of the wall time; {r.db_connects} database connections "
            "opened"
        )
        if key != "push":
            calls = (
                f"{link.deliver_calls} deliver_due_exports() calls"
                if key == "deliver"
                else f"{link.poll_calls} poll_connection() calls"
            )
            print(
                f"  {'':<8} SFTP requests/{unit}: {describe(r.sftp, per)}; {r.logins} SSH logins, "
                f"{r.sessions} SFTP sessions, {calls}"
            )
    for key in ("a", "c"):
        if key in rows:
            r = rows[key][0]
            print(f"  ({key})      SFTP requests/file: {describe(r.sftp, max(r.files, 1))}; {r.logins} SSH login")

    print("\npeak RSS of this process within each phase (max over rounds; growth over the phase's start)")
    print(
        "  "
        + ", ".join(
            f"{key} {max(x.rss_peak_kb for x in runs) / 1024:.0f} MB "
            f"(+{max(x.rss_peak_kb - x.rss_start_kb for x in runs) / 1024:.1f})"
            for key, runs in rows.items()
            if key not in ("b",)
        )
    )
    print(
        f"other processes used {100 * link.busy:.0f}% of one core on average meanwhile "
        f"({os.cpu_count()} cores)"
        + ("  -- busy machine: ratios noisier than usual" if link.busy > 0.25 * (os.cpu_count() or 1) else "")
    )
