"""SFTPTransport against a real OpenSSH sshd (see tests/fixtures/sftp.py).

Every success is checked on the server's disk; every failure class is checked
for its code, whether it is permanent, and that no secret leaks into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest

from connectors.transports import ErrorCode, get_transport
from connectors.transports.base import (
    HostKeyError,
    RemoteFile,
    TransportError,
)
from connectors.transports.sftp import SFTPTransport
from tests.fixtures.sftp import CLIENT_KEY_PASSPHRASE
from tests.servers.blackhole import BlackholeServer, closed_port
from tests.servers.drip_sftp import DrippingSFTPServer
from tests.servers.relay import Relay
from tests.servers.sshd import fingerprint, make_client_key


def connect(settings) -> SFTPTransport:
    """A transport from the registry, opened by the ``with`` around it."""
    transport = get_transport(settings)
    assert isinstance(transport, SFTPTransport)
    return transport


def open_error(settings) -> TransportError:
    transport = get_transport(settings)
    with pytest.raises(TransportError) as info:
        transport.open()
    transport.close()  # a second close after open() cleaned up must be harmless
    return info.value


def secrets_of(settings) -> list[str]:
    values = [settings.password, settings.private_key_passphrase, settings.private_key]
    # Any single line of the key body would already be a leak.
    values += [line for line in settings.private_key.splitlines() if line and not line.startswith("-----")]
    return [v for v in values if v]


def assert_no_secret(text: str, settings) -> None:
    for secret in secrets_of(settings):
        assert secret not in text


# -- uploads and file operations ---------------------------------------------------


def test_put_atomic_writes_final_file_and_leaves_no_temp(sftp_settings, sftp_dir: Path):
    data = os.urandom(300_000)  # several SFTP packets
    with connect(sftp_settings()) as t:
        final = t.put_atomic(str(sftp_dir), "invoice.xml", data)
        assert [s.name for s in t.steps] == ["TCP connect", "Host key", "Authentication", "SFTP session"]
        assert all(s.ok for s in t.steps)
    assert final == str(sftp_dir / "invoice.xml")
    assert (sftp_dir / "invoice.xml").read_bytes() == data
    assert sorted(p.name for p in sftp_dir.iterdir()) == ["invoice.xml"]


def test_put_atomic_refuses_existing_final_file(sftp_settings, sftp_dir: Path):
    (sftp_dir / "order.csv").write_bytes(b"original")
    with connect(sftp_settings()) as t, pytest.raises(TransportError) as info:
        t.put_atomic(str(sftp_dir), "order.csv", b"new content")
    assert info.value.code == ErrorCode.EXISTS and info.value.permanent
    assert (sftp_dir / "order.csv").read_bytes() == b"original"
    assert sorted(p.name for p in sftp_dir.iterdir()) == ["order.csv"]


def test_rename_no_overwrite_relies_on_the_server_refusing(sftp_settings, sftp_dir: Path):
    (sftp_dir / "a.tmp").write_bytes(b"new")
    (sftp_dir / "a").write_bytes(b"old")
    with connect(sftp_settings()) as t, pytest.raises(TransportError) as info:
        t.rename_no_overwrite(str(sftp_dir / "a.tmp"), str(sftp_dir / "a"))
    assert info.value.code == ErrorCode.EXISTS and info.value.permanent
    assert (sftp_dir / "a").read_bytes() == b"old"
    assert (sftp_dir / "a.tmp").read_bytes() == b"new"


def test_list_dir_stat_and_read_file(sftp_settings, sftp_dir: Path):
    (sftp_dir / "one.txt").write_bytes(b"12345")
    (sftp_dir / "empty.txt").write_bytes(b"")
    (sftp_dir / "subdir").mkdir()
    os.utime(sftp_dir / "one.txt", (1_700_000_000, 1_700_000_000))
    with connect(sftp_settings()) as t:
        files = {f.name: f for f in t.list_dir(str(sftp_dir))}
        assert set(files) == {"one.txt", "empty.txt"}  # regular files only
        assert files["one.txt"].size == 5 and files["one.txt"].mtime == 1_700_000_000
        assert t.stat(str(sftp_dir / "one.txt")).size == 5
        assert t.stat(str(sftp_dir / "missing.txt")) is None
        assert t.read_file(str(sftp_dir / "one.txt"), max_bytes=5) == b"12345"
        assert t.read_file(str(sftp_dir / "empty.txt"), max_bytes=0) == b""
        with pytest.raises(TransportError) as info:
            t.read_file(str(sftp_dir / "one.txt"), max_bytes=4)
        assert info.value.code == ErrorCode.TOO_LARGE and info.value.permanent


def test_read_file_larger_than_a_packet(sftp_settings, sftp_dir: Path):
    data = os.urandom(1_000_000)
    (sftp_dir / "big.bin").write_bytes(data)
    with connect(sftp_settings()) as t:
        assert t.read_file(str(sftp_dir / "big.bin"), max_bytes=len(data)) == data


def test_list_dir_with_many_entries(sftp_settings, sftp_dir: Path):
    for i in range(3000):  # many READDIR batches
        (sftp_dir / f"f{i:05d}.txt").touch()
    with connect(sftp_settings()) as t:
        names = {f.name for f in t.list_dir(str(sftp_dir))}
    assert names == {f"f{i:05d}.txt" for i in range(3000)}


def test_move_no_overwrite_adds_a_numeric_suffix(sftp_settings, sftp_dir: Path):
    (sftp_dir / "in").mkdir()
    (sftp_dir / "done").mkdir()
    (sftp_dir / "in" / "report.csv").write_bytes(b"third")
    (sftp_dir / "done" / "report.csv").write_bytes(b"first")
    (sftp_dir / "done" / "report-1.csv").write_bytes(b"second")
    with connect(sftp_settings()) as t:
        moved = t.move_no_overwrite(str(sftp_dir / "in" / "report.csv"), str(sftp_dir / "done"))
    assert moved == str(sftp_dir / "done" / "report-2.csv")
    assert not (sftp_dir / "in" / "report.csv").exists()
    assert [(sftp_dir / "done" / n).read_bytes() for n in ("report.csv", "report-1.csv", "report-2.csv")] == [
        b"first",
        b"second",
        b"third",
    ]


def test_read_many_pipelines_small_files_and_gives_each_its_own_outcome(sftp_settings, sftp_dir: Path,
                                                                         monkeypatch) -> None:
    for i in range(5):
        (sftp_dir / f"ack_{i}.json").write_bytes(b'{"n": %d}' % i)
    (sftp_dir / "empty.json").write_bytes(b"")
    (sftp_dir / "big.json").write_bytes(b"x" * 100_000)  # more than one READ: the one-file path
    one_by_one: list[str] = []
    single = SFTPTransport.read_file
    monkeypatch.setattr(SFTPTransport, "read_file", lambda self, path, **kw: one_by_one.append(path) or single(
        self, path, **kw))
    with connect(sftp_settings()) as t:
        listed = sorted(t.list_dir(str(sftp_dir)), key=lambda f: f.name)
        (sftp_dir / "ack_3.json").unlink()  # gone between the listing and the read
        results = dict(zip([f.name for f in listed], t.read_many(str(sftp_dir), listed, max_bytes=200_000),
                           strict=True))
    assert [results[f"ack_{i}.json"] for i in (0, 1, 2, 4)] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}', b'{"n": 4}']
    gone = results["ack_3.json"]
    assert isinstance(gone, TransportError) and gone.code == ErrorCode.NOT_FOUND and "ack_3.json" in gone.message
    assert results["empty.json"] == b"" and results["big.json"] == b"x" * 100_000
    assert sorted(Path(p).name for p in one_by_one) == ["big.json", "empty.json"]  # the small ones went batched


def test_move_many_moves_a_batch_and_each_refusal_goes_its_own_way(sftp_settings, sftp_dir: Path) -> None:
    inbox, done = sftp_dir / "in", sftp_dir / "done"
    inbox.mkdir()
    done.mkdir()
    for name in ("a.json", "b.json", "c.json"):
        (inbox / name).write_bytes(name.encode())
    (done / "b.json").write_bytes(b"an earlier b")
    moves = [(str(inbox / n), str(done)) for n in ("a.json", "b.json", "gone.json", "c.json")]
    with connect(sftp_settings()) as t:
        results = t.move_many(moves)
    assert results[0] == str(done / "a.json") and results[1] == str(done / "b-1.json")
    assert isinstance(results[2], TransportError) and results[2].code == ErrorCode.NOT_FOUND
    assert results[3] == str(done / "c.json")
    assert sorted(p.name for p in inbox.iterdir()) == []
    assert {p.name: p.read_bytes() for p in done.iterdir()} == {
        "a.json": b"a.json", "b.json": b"an earlier b", "b-1.json": b"b.json", "c.json": b"c.json"}


def test_makedirs_and_remove(sftp_settings, sftp_dir: Path):
    (sftp_dir / "a").mkdir()
    (sftp_dir / "file").write_bytes(b"x")
    with connect(sftp_settings()) as t:
        t.makedirs(str(sftp_dir / "a" / "b" / "c"))
        t.makedirs(str(sftp_dir / "a" / "b" / "c"))  # existing is fine
        t.makedirs(str(sftp_dir / "a" / "b") + "/")
        with pytest.raises(TransportError) as info:
            t.makedirs(str(sftp_dir / "file" / "sub"))
        assert info.value.permanent
        t.remove(str(sftp_dir / "file"))
        with pytest.raises(TransportError) as info:
            t.remove(str(sftp_dir / "file"))
        assert info.value.code == ErrorCode.NOT_FOUND
    assert (sftp_dir / "a" / "b" / "c").is_dir()
    assert not (sftp_dir / "file").exists()


def test_put_many_uploads_over_two_channels(sftp_settings, sftp_dir: Path, monkeypatch):
    opened: list[int] = []
    real_open_sftp = SFTPTransport._open_sftp

    def counting_open_sftp(self):
        opened.append(threading.get_ident())
        return real_open_sftp(self)

    monkeypatch.setattr(SFTPTransport, "_open_sftp", counting_open_sftp)
    (sftp_dir / "f3.xml").write_bytes(b"already there")
    items = [(f"f{i}.xml", os.urandom(50_000 + i)) for i in range(8)]
    with connect(sftp_settings()) as t:
        results = t.put_many(str(sftp_dir), items)
    assert len(opened) == 2  # the session's channel plus one for the second worker
    assert [name for name, _ in results] == [name for name, _ in items]
    for (name, data), (_, outcome) in zip(items, results, strict=False):
        if name == "f3.xml":
            assert isinstance(outcome, TransportError) and outcome.code == ErrorCode.EXISTS
            assert (sftp_dir / name).read_bytes() == b"already there"
        else:
            assert outcome == str(sftp_dir / name)
            assert (sftp_dir / name).read_bytes() == data
    assert not [p for p in sftp_dir.iterdir() if p.name.endswith(".tmp")]


def test_put_batch_pipelines_small_files_and_gives_each_its_own_outcome(sftp_settings, sftp_dir: Path,
                                                                         monkeypatch) -> None:
    (sftp_dir / "b.json").write_bytes(b"somebody else's")
    (sftp_dir / "c.json.tmp").mkdir()  # the temp name cannot be opened for writing
    items = [("a.json", b"A" * 1200), ("b.json", b"B"), ("c.json", b"C"), ("big.json", os.urandom(100_000)),
             ("d.json", b"")]
    one_by_one: list[str] = []
    single = SFTPTransport.put_atomic
    monkeypatch.setattr(SFTPTransport, "put_atomic", lambda self, d, name, data: one_by_one.append(name) or single(
        self, d, name, data))
    with connect(sftp_settings()) as t:
        results = dict(zip([name for name, _ in items], t.put_batch(str(sftp_dir), items), strict=True))
    assert one_by_one == ["big.json"]  # the rest went in one pipelined batch
    for name in ("a.json", "big.json", "d.json"):
        assert results[name] == str(sftp_dir / name)
        assert (sftp_dir / name).read_bytes() == dict(items)[name]
    refused, failed = results["b.json"], results["c.json"]
    assert isinstance(refused, TransportError) and refused.code == ErrorCode.EXISTS and refused.permanent
    assert (sftp_dir / "b.json").read_bytes() == b"somebody else's"  # never overwritten
    assert isinstance(failed, TransportError) and "c.json.tmp" in failed.message
    assert not (sftp_dir / "c.json").exists()
    assert sorted(p.name for p in sftp_dir.iterdir() if p.name.endswith(".tmp")) == ["c.json.tmp"]  # ours: none


def test_put_many_with_nothing_to_do(sftp_settings, sftp_dir: Path):
    with connect(sftp_settings()) as t:
        assert t.put_many(str(sftp_dir), []) == []


# -- logging in ---------------------------------------------------------------------


def test_password_login(sftp_settings, sftp_password_dir: Path, sshd_server):
    with connect(sftp_settings("password")) as t:
        assert t.steps[2].detail == "password"
        t.put_atomic(str(sftp_password_dir), "hello.txt", b"hi")
    assert (sftp_password_dir / "hello.txt").read_bytes() == b"hi"
    if os.geteuid() == 0:  # written by the password user, not by root
        assert (sftp_password_dir / "hello.txt").stat().st_uid == sshd_server.password_user.uid


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
@pytest.mark.parametrize("fmt", ["openssh", "pem"])
@pytest.mark.parametrize("protected", [False, True], ids=["plain", "passphrase"])
def test_key_login(sftp_settings, sftp_dir: Path, kind, fmt, protected):
    settings = sftp_settings(key=(kind, fmt, protected))
    assert settings.private_key.startswith("-----BEGIN")
    with connect(settings) as t:
        assert t.steps[2].detail.startswith("key ")
        t.write_file(str(sftp_dir / "k.txt"), kind.encode())
    assert (sftp_dir / "k.txt").read_bytes() == kind.encode()


def test_key_refused_then_password_accepted(sftp_settings, sftp_password_dir: Path, sshd_server):
    if sshd_server.kind == "asyncssh":  # it drops paramiko's second ssh-userauth service request; OpenSSH doesn't
        pytest.skip("the asyncssh stand-in refuses a second login method on one connection")
    stranger = make_client_key("ed25519")
    settings = sftp_settings("password", private_key=stranger.private_key)
    with connect(settings) as t:
        assert t.steps[2].detail == "password"


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_the_pinned_host_key_type_is_asked_for(sftp_settings, sshd_server, kind):
    pinned = sshd_server.host_keys[kind]
    with connect(sftp_settings(host_key=pinned + " comment")) as t:
        assert t.steps[1].detail == f"{pinned.split()[0]} {fingerprint(pinned)}; strict key exchange"


# -- failures -----------------------------------------------------------------------


def test_wrong_password(sftp_settings):
    settings = sftp_settings("password", password="not-the-password-7f3a")
    err = open_error(settings)
    assert err.code == ErrorCode.AUTH and err.permanent
    assert settings.username in err.message
    assert_no_secret(err.message, settings)


def test_unauthorized_key(sftp_settings):
    stranger = make_client_key("ed25519")
    settings = sftp_settings(private_key=stranger.private_key, private_key_passphrase="")
    err = open_error(settings)
    assert err.code == ErrorCode.AUTH and err.permanent
    assert_no_secret(err.message, settings)


def test_unknown_host_key_is_refused_with_its_fingerprint(sftp_settings, sshd_server):
    transport = get_transport(sftp_settings(host_key=""))
    with pytest.raises(HostKeyError) as info:
        transport.open()
    err = info.value
    assert err.code == ErrorCode.HOST_KEY_UNKNOWN and err.permanent
    assert err.presented_key == sshd_server.host_keys["ed25519"]  # Ed25519 preferred when nothing is pinned
    if shutil.which("ssh-keygen"):
        pub = sshd_server.dir / "ssh_host_ed25519_key.pub"
        listed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
        assert err.presented_fingerprint == listed.stdout.split()[1]
    assert err.presented_fingerprint in err.message
    assert [(s.name, s.ok) for s in transport.steps] == [("TCP connect", True), ("Host key", False)]


def test_changed_host_key(sftp_settings, sshd_server, sshd_factory):
    other = sshd_factory()  # same setup, other host keys: "the server was replaced"
    settings = sftp_settings(port=other.port)  # still pins sshd_server's key
    err = open_error(settings)
    assert isinstance(err, HostKeyError)
    assert err.code == ErrorCode.HOST_KEY_CHANGED and err.permanent
    assert err.expected_fingerprint == fingerprint(sshd_server.host_keys["ed25519"])
    assert err.presented_fingerprint == fingerprint(other.host_keys["ed25519"])
    assert err.presented_key == other.host_keys["ed25519"]
    assert err.expected_fingerprint in err.message and err.presented_fingerprint in err.message


def test_pinned_key_of_a_type_the_server_lacks(sftp_settings):
    foreign = make_client_key("ecdsa").public_line  # not the server's key, a type it does have
    err = open_error(sftp_settings(host_key=foreign))
    assert err.code == ErrorCode.HOST_KEY_CHANGED and err.permanent


def test_nothing_listening():
    from connectors.transports.base import TransportSettings

    err = open_error(TransportSettings(kind="sftp", host="127.0.0.1", port=closed_port(), username="x", password="y"))
    assert err.code == ErrorCode.REFUSED and not err.permanent
    assert "127.0.0.1:" in err.message


def test_silent_server_times_out_within_the_connect_timeout(sftp_settings):
    with BlackholeServer() as hole:
        started = time.monotonic()
        err = open_error(sftp_settings(port=hole.port, connect_timeout=1.0))
        took = time.monotonic() - started
    assert err.code == ErrorCode.TIMEOUT and not err.permanent
    assert took < 5


def test_stalled_server_times_out_within_the_operation_timeout(sftp_settings, sshd_server, sftp_dir: Path):
    if not hasattr(sshd_server, "connection_pids"):
        pytest.skip("needs sshd processes to freeze")
    before = sshd_server.connection_pids()
    transport = get_transport(sftp_settings(operation_timeout=1.0))
    transport.open()
    stalled = sshd_server.connection_pids() - before  # this connection's sshd processes
    assert stalled
    try:
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            transport.list_dir(str(sftp_dir))
        took = time.monotonic() - started
    finally:
        for pid in stalled:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        transport.close()
    assert info.value.code == ErrorCode.TIMEOUT and not info.value.permanent
    assert str(sftp_dir) in info.value.message
    assert took < 5


def test_server_stalling_before_the_sftp_session_times_out(sftp_settings, sshd_server, monkeypatch):
    # paramiko's invoke_subsystem has no deadline of its own; open() must still give up.
    if not hasattr(sshd_server, "connection_pids"):
        pytest.skip("needs sshd processes to freeze")
    before = sshd_server.connection_pids()
    stalled: set[int] = set()
    real_invoke = paramiko.Channel.invoke_subsystem

    def freeze_then_invoke(channel, name):
        stalled.update(sshd_server.connection_pids() - before)
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        return real_invoke(channel, name)

    monkeypatch.setattr(paramiko.Channel, "invoke_subsystem", freeze_then_invoke)
    transport = get_transport(sftp_settings(operation_timeout=1.0))
    try:
        with pytest.raises(TransportError) as info:
            transport.open()
    finally:
        for pid in stalled:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert stalled
    assert info.value.code == ErrorCode.TIMEOUT and not info.value.permanent
    assert [(s.name, s.ok) for s in transport.steps][-1] == ("SFTP session", False)


def test_server_hanging_up_at_once_is_a_transient_network_error(sftp_settings):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        err = open_error(sftp_settings(port=port))
    finally:
        thread.join(5)
        listener.close()
    assert err.code == ErrorCode.NETWORK and not err.permanent


def test_unresolvable_host_name(sftp_settings, monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)  # no real DNS query from a test
    transport = get_transport(sftp_settings(host="sftp.example.invalid"))
    with pytest.raises(TransportError) as info:
        transport.open()
    assert info.value.code == ErrorCode.DNS and not info.value.permanent
    assert "sftp.example.invalid" in info.value.message
    assert [(s.name, s.ok) for s in transport.steps] == [("TCP connect", False)]


def test_missing_directory(sftp_settings, sftp_dir: Path):
    missing = str(sftp_dir / "no" / "such")
    with connect(sftp_settings()) as t:
        for call in (
            lambda: t.list_dir(missing),
            lambda: t.put_atomic(missing, "x.txt", b"x"),
            lambda: t.read_file(missing + "/x.txt", max_bytes=10),
        ):
            with pytest.raises(TransportError) as info:
                call()
            assert info.value.code == ErrorCode.NOT_FOUND and info.value.permanent
            assert missing in info.value.message


def test_no_permission(sftp_settings, sshd_server):
    # root writes anywhere, so as root the password user shows the refusal.
    user, kind = sshd_server.key_user, "key"
    if user.readonly_dir is None:
        user, kind = sshd_server.password_user, "password"
    if user is None or user.readonly_dir is None:
        pytest.skip("no user without write access on this test server")
    readonly = user.readonly_dir
    with connect(sftp_settings(kind)) as t:
        assert t.read_file(str(readonly / "existing.txt"), max_bytes=100) == b"read me\n"
        for call in (
            lambda: t.put_atomic(str(readonly), "x.txt", b"x"),
            lambda: t.makedirs(str(readonly / "sub")),
            lambda: t.remove(str(readonly / "existing.txt")),
        ):
            with pytest.raises(TransportError) as info:
                call()
            assert info.value.code == ErrorCode.PERMISSION and info.value.permanent
    assert sorted(p.name for p in readonly.iterdir()) == ["existing.txt"]


@pytest.mark.parametrize("fmt", ["openssh", "pem"])
def test_wrong_passphrase(sftp_settings, fmt):
    settings = sftp_settings(key=("rsa", fmt, True), private_key_passphrase="wrong passphrase 42")
    err = open_error(settings)
    assert err.code == ErrorCode.KEY_INVALID and err.permanent
    assert "passphrase" in err.message
    assert_no_secret(err.message, settings)
    assert CLIENT_KEY_PASSPHRASE not in err.message


def test_missing_passphrase(sftp_settings):
    settings = sftp_settings(key=("ed25519", "openssh", True), private_key_passphrase="")
    err = open_error(settings)
    assert err.code == ErrorCode.KEY_INVALID and err.permanent and "passphrase" in err.message


def test_unreadable_private_key(sftp_settings):
    broken = "-----BEGIN OPENSSH PRIVATE KEY-----\nbm9wZQ==\n-----END OPENSSH PRIVATE KEY-----"
    settings = sftp_settings(private_key=broken)
    err = open_error(settings)
    assert err.code == ErrorCode.KEY_INVALID and err.permanent
    assert "bm9wZQ" not in err.message


def test_no_secret_in_repr_errors_or_steps(sftp_settings, sftp_client_keys):
    key = sftp_client_keys[("ecdsa", "pem", True)]
    settings = sftp_settings("password", private_key=key.private_key, private_key_passphrase=key.passphrase)
    assert_no_secret(repr(settings), settings)
    failing = [
        sftp_settings("password", password="wrong-" + settings.password),
        sftp_settings("password", private_key=key.private_key, private_key_passphrase="nope-" + key.passphrase),
        replace(settings, password="wrong-" + settings.password),  # key refused, then password refused
        replace(settings, host_key=""),
    ]
    for bad in failing:
        transport = get_transport(bad)
        with pytest.raises(TransportError) as info:
            transport.open()
        texts = [str(info.value), repr(info.value), repr(bad)] + [repr(s) for s in transport.steps]
        for text in texts:
            assert_no_secret(text, bad)
            assert_no_secret(text, settings)


def test_failed_open_leaves_no_connection_behind(sftp_settings):
    def paramiko_threads() -> set[threading.Thread]:
        return {th for th in threading.enumerate() if type(th).__name__ == "Transport" and th.is_alive()}

    before = paramiko_threads()  # earlier tests' threads may still be winding down
    transport = get_transport(sftp_settings("key", private_key=make_client_key("rsa").private_key))
    with pytest.raises(TransportError):
        transport.open()  # fails after the SSH connection is up: at login
    deadline = time.monotonic() + 2
    while paramiko_threads() - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not paramiko_threads() - before
    assert transport._ssh is None and transport._sftp is None and transport._sock is None


def test_server_refusing_the_sftp_subsystem_is_a_permanent_error(sshd_server, sftp_client_keys, sftp_settings) -> None:
    """Login works, SFTP is off for the account: retrying cannot help, and the message says so."""
    if sshd_server.kind == "asyncssh":
        pytest.skip("needs OpenSSH to start a server without the sftp subsystem")  # never in CI: sshd is there
    from tests.servers.sshd import SSHDServer

    key = sftp_client_keys[("ed25519", "openssh", False)]
    with SSHDServer(sftp=False) as shell_only:
        shell_only.authorize(key.public_line)
        settings = sftp_settings(port=shell_only.port, host_key=shell_only.host_keys["ed25519"])
        with pytest.raises(TransportError) as err:
            get_transport(settings).open()
    assert err.value.permanent and err.value.code == ErrorCode.PERMISSION
    assert "refused the SFTP subsystem" in err.value.message


def test_put_many_on_a_closed_transport_reports_each_item(sftp_settings) -> None:
    results = get_transport(sftp_settings()).put_many("/tmp", [("a.json", b"{}"), ("b.json", b"{}")])
    assert [name for name, _ in results] == ["a.json", "b.json"]
    assert all(isinstance(result, TransportError) for _, result in results)


@pytest.mark.parametrize("channels", [1, 4])
def test_upload_channels_setting_opens_that_many_sftp_sessions(sshd_server, sftp_settings, sftp_dir,
                                                               channels: int) -> None:
    """The server's own log counts the SFTP sessions one connection opened for put_many."""
    if sshd_server.kind == "asyncssh":
        pytest.skip("counts sessions in OpenSSH's log")  # never in CI: sshd is there

    def sessions() -> int:
        return sshd_server.log_path.read_text(errors="replace").count("Starting session: subsystem 'sftp'")

    before = sessions()
    items = [(f"f{n}.json", b"{}\n") for n in range(12)]
    with get_transport(sftp_settings(upload_channels=channels)) as transport:
        results = transport.put_many(str(sftp_dir), items)
    assert all(isinstance(result, str) for _, result in results)
    assert sorted(p.name for p in sftp_dir.iterdir()) == sorted(name for name, _ in items)
    deadline = time.monotonic() + 5  # sshd writes its log asynchronously
    while sessions() - before < channels and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions() - before == channels


# -- wall-clock deadlines: paramiko's channel timeout restarts with every packet ----------------------
MARGIN = 3.0  # generous: the deadline is the timeout itself; this only absorbs a slow CI machine
PROMPT = 1.0  # "at once": a later call on a cut channel or connection


def timed_failure(call: Callable[[], object]) -> tuple[TransportError, float]:
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        call()
    return info.value, time.monotonic() - started


def assert_timed_out(call: Callable[[], object], limit: float) -> TransportError:
    err, took = timed_failure(call)
    assert err.code == ErrorCode.TIMEOUT and not err.permanent, err.message
    assert took < limit + MARGIN, f"took {took:.1f} s for a {limit} s deadline"
    return err


def assert_fails_at_once(call: Callable[[], object]) -> TransportError:
    err, took = timed_failure(call)
    assert took < PROMPT, f"took {took:.1f} s: a cut channel or connection must fail at once"
    assert not err.permanent
    return err


@pytest.fixture
def drip_server() -> Iterator[DrippingSFTPServer]:
    with DrippingSFTPServer() as server:
        yield server


@pytest.fixture
def drip_dir(drip_server: DrippingSFTPServer) -> Path:
    path = drip_server.key_user.fresh_dir("deadline")
    (path / "drip.json").write_bytes(b"{}")
    (path / "ok.json").write_bytes(b"ok")
    return path


# Each call names a path with "drip" where the server drips its reply (see tests/servers/drip_sftp.py).
DRIPPING_OPERATIONS: dict[str, Callable[[SFTPTransport, Path], object]] = {
    "stat": lambda t, d: t.stat(f"{d}/drip.json"),
    "list_dir": lambda t, d: t.list_dir(f"{d}/drip"),
    "read_file": lambda t, d: t.read_file(f"{d}/drip.json", max_bytes=100),  # OPEN answers, READ drips
    "write_file": lambda t, d: t.write_file(f"{d}/drip-new.json", b"{}"),  # OPEN answers, WRITE drips
    "rename": lambda t, d: t.rename(f"{d}/ok.json", f"{d}/drip-renamed.json"),
    "rename_no_overwrite": lambda t, d: t.rename_no_overwrite(f"{d}/ok.json", f"{d}/drip-renamed.json"),
    "remove": lambda t, d: t.remove(f"{d}/drip.json"),
    "makedirs": lambda t, d: t.makedirs(f"{d}/drip/sub"),
    "put_atomic": lambda t, d: t.put_atomic(str(d), "drip-put.json", b"{}"),  # and no second wait to clean up
}


@pytest.mark.parametrize("operation", sorted(DRIPPING_OPERATIONS))
def test_dripping_reply_ends_at_the_operation_timeout(drip_server, drip_dir: Path, operation: str) -> None:
    limit = 1.0
    with connect(drip_server.settings(operation_timeout=limit)) as t:
        err = assert_timed_out(lambda: DRIPPING_OPERATIONS[operation](t, drip_dir), limit)
        assert drip_server.drips >= 1  # the server did drip (a byte every 0.2 s: no channel timeout fires)
        assert f"within {limit:g} s" in err.message and drip_server.host in err.message
        # The cut channel stays cut: later calls fail at once instead of waiting on it.
        err = assert_fails_at_once(lambda: t.stat(f"{drip_dir}/ok.json"))
        assert "closed" in err.message


# Pipelined batches: the dripping request sits among others that are answered at once.
DRIPPING_BATCHES: dict[str, Callable[[SFTPTransport, Path], object]] = {
    "read_many": lambda t, d: t.read_many(str(d), [RemoteFile("ok.json", 2, None), RemoteFile("drip.json", 2, None)],
                                          max_bytes=100),  # the OPENs answer, the second READ drips
    "put_batch": lambda t, d: t.put_batch(str(d), [("a.json", b"{}"), ("drip-b.json", b"{}"), ("c.json", b"{}")]),
    "move_many": lambda t, d: t.move_many([(f"{d}/ok.json", f"{d}/sub"), (f"{d}/drip.json", f"{d}/sub")]),
}


@pytest.mark.parametrize("operation", sorted(DRIPPING_BATCHES))
def test_a_dripping_reply_ends_a_pipelined_batch_at_the_operation_timeout(drip_server, drip_dir: Path,
                                                                          operation: str, monkeypatch) -> None:
    monkeypatch.setattr(SFTPTransport, "_rename_refuses_overwrite", lambda self: True)  # the pipelined path
    limit = 1.0
    with connect(drip_server.settings(operation_timeout=limit)) as t:
        err = assert_timed_out(lambda: DRIPPING_BATCHES[operation](t, drip_dir), limit)
        assert drip_server.drips >= 1 and f"within {limit:g} s" in err.message
        assert "closed" in assert_fails_at_once(lambda: t.stat(f"{drip_dir}/ok.json")).message


def test_a_lane_cut_at_its_deadline_leaves_the_other_lanes_working(drip_server, drip_dir: Path) -> None:
    limit = 1.0
    ok = f"{drip_dir}/ok.json"
    with connect(drip_server.settings(operation_timeout=limit)) as t:
        lanes = t.open_lanes(3)
        assert len(lanes) == 3 and lanes[0] is t
        try:
            assert_timed_out(lambda: lanes[1].stat(f"{drip_dir}/drip.json"), limit)
            time.sleep(limit + 0.5)  # past the keepalive check: the connection answered it, so it stays up
            assert t._ssh is not None and t._ssh.is_active()
            assert t.stat(ok).size == 2
            assert lanes[2].read_file(ok, max_bytes=10) == b"ok"
            assert_fails_at_once(lambda: lanes[1].stat(ok))
            # The main channel cut in turn: the remaining lane still works.
            assert_timed_out(lambda: t.list_dir(f"{drip_dir}/drip"), limit)
            assert_fails_at_once(lambda: t.stat(ok))
            time.sleep(limit + 0.5)
            assert lanes[2].stat(ok).size == 2
        finally:
            t.close_lanes(lanes)


def test_dripping_channel_open_ends_at_the_operation_timeout(drip_server, drip_dir: Path) -> None:
    limit = 1.0
    with connect(drip_server.settings(operation_timeout=limit)) as t:
        drip_server.drip_sessions = True  # every new SFTP session drips its version reply
        started = time.monotonic()
        lanes = t.open_lanes(2)
        assert time.monotonic() - started < limit + MARGIN
        assert lanes == [t]  # fewer channels is slower, not wrong
        assert t.stat(f"{drip_dir}/ok.json").size == 2
    transport = get_transport(drip_server.settings(operation_timeout=limit))
    assert_timed_out(transport.open, limit)
    assert [(s.name, s.ok) for s in transport.steps][-1] == ("SFTP session", False)
    assert transport._ssh is None and transport._sftp is None


def test_listing_over_a_trickling_link_ends_at_the_operation_timeout(sftp_settings, sshd_server, sftp_dir) -> None:
    """Real sshd behind a slow link: each READDIR reply comes in time, the whole listing does not."""
    for i in range(6000):  # about 700 KB of listing: 17 s at the throttled rate
        (sftp_dir / f"f{i:05d}.json").touch()
    one = str(sftp_dir / "f00000.json")
    limit = 2.0
    with Relay(sshd_server.port) as relay, connect(sftp_settings(port=relay.port, operation_timeout=limit)) as t:
        lanes = t.open_lanes(2)
        assert len(lanes) == 2
        try:
            relay.throttle(40_000)
            assert_timed_out(lambda: t.list_dir(str(sftp_dir)), limit)
            assert_fails_at_once(lambda: t.stat(one))
            # Slow is not stuck: the keepalive was answered, so the other lane carries on.
            time.sleep(limit + 0.5)
            assert t._ssh is not None and t._ssh.is_active()
            assert lanes[1].stat(one).size == 0
        finally:
            t.close_lanes(lanes)


@pytest.mark.parametrize("rate", [0, 5], ids=["held", "trickling"])
def test_a_stuck_connection_is_cut_so_every_lane_fails_at_once(sftp_settings, sshd_server, sftp_dir, rate) -> None:
    path = str(sftp_dir / "a.json")
    (sftp_dir / "a.json").write_bytes(b"{}")
    limit = 2.0
    with Relay(sshd_server.port) as relay, connect(sftp_settings(port=relay.port, operation_timeout=limit)) as t:
        lanes = t.open_lanes(3)
        assert len(lanes) == 3
        try:
            relay.throttle(rate)
            assert_timed_out(lambda: lanes[1].stat(path), limit)
            # No keepalive reply within the grace period: the connection itself is cut ...
            deadline = time.monotonic() + limit + MARGIN
            while t._ssh is not None and t._ssh.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert t._ssh is not None and not t._ssh.is_active()
            # ... so no lane waits out a deadline of its own any more.
            for lane in lanes:
                assert_fails_at_once(lambda lane=lane: lane.stat(path))
        finally:
            t.close_lanes(lanes)


def test_several_pinned_keys_any_of_them_is_trusted(sshd_server, sftp_settings, sftp_dir) -> None:
    """While a server rotates its key, both may be pinned (one per line); a key pinned nowhere is still refused."""
    from tests.servers.sshd import make_client_key

    other = make_client_key("ed25519").public_line  # some key the server does not have
    for pins in (f"{other}\n{sshd_server.host_keys['ed25519']}", f"{sshd_server.host_keys['ecdsa']}\n{other}"):
        with get_transport(sftp_settings(host_key=pins)) as transport:
            assert transport.list_dir(str(sftp_dir)) == []
    with pytest.raises(HostKeyError) as err, get_transport(sftp_settings(host_key=other)):
        pass
    assert err.value.code == ErrorCode.HOST_KEY_CHANGED
