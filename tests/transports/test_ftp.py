"""FTP/FTPS transports against real pyftpdlib servers (plain, FTPS, one without MLSD/MLST) and a dripping one."""

from __future__ import annotations

import base64
import os
import time

import pytest

from connectors.transports import ErrorCode, get_transport
from connectors.transports.base import (
    HostKeyError,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
)
from tests.servers.blackhole import BlackholeServer, closed_port
from tests.servers.dripping import DrippingFTPServer
from tests.servers.ftpd import FTPDServer

MTIME = 1_700_000_000  # a whole second: MDTM/MLSD carry seconds


@pytest.fixture(params=["ftp", "ftps", "ftp_nomlsd"])
def settings(request: pytest.FixtureRequest) -> TransportSettings:
    """Read/write settings for each server flavour in turn."""
    return request.getfixturevalue(f"{request.param}_settings")()


def failure(settings: TransportSettings, action, code: str, *, permanent: bool) -> TransportError:
    """Run ``action(transport)``; assert the error class and that no secret leaked into it."""
    with pytest.raises(TransportError) as info, get_transport(settings) as t:
        action(t)
    err = info.value
    assert (err.code, err.permanent) == (code, permanent), err.message
    assert settings.password not in str(err)
    return err


# -- behaviour on every flavour -------------------------------------------------
def test_put_atomic_writes_final_file_and_leaves_no_temp(settings, ftp_workdir) -> None:
    with get_transport(settings) as t:
        final = t.put_atomic(ftp_workdir.remote, "order-1.json", b'{"id": 1}')
    assert final == f"{ftp_workdir.remote}/order-1.json"
    assert (ftp_workdir.local / "order-1.json").read_bytes() == b'{"id": 1}'
    assert os.listdir(ftp_workdir.local) == ["order-1.json"]


def test_put_atomic_refuses_existing_final_file(settings, ftp_workdir) -> None:
    (ftp_workdir.local / "order-1.json").write_bytes(b"original")
    failure(settings, lambda t: t.put_atomic(ftp_workdir.remote, "order-1.json", b"new"), ErrorCode.EXISTS,
            permanent=True)
    assert (ftp_workdir.local / "order-1.json").read_bytes() == b"original"
    assert os.listdir(ftp_workdir.local) == ["order-1.json"]


def test_list_stat_and_read_with_cap(settings, ftp_workdir) -> None:
    big = bytes(range(256)) * 300  # CR/LF bytes: ASCII-mode transfers would alter them
    for name, data in [("a.json", b"12345"), ("b.json", big)]:
        (ftp_workdir.local / name).write_bytes(data)
        os.utime(ftp_workdir.local / name, (MTIME, MTIME))
    (ftp_workdir.local / "subdir").mkdir()
    with get_transport(settings) as t:
        listed = sorted((f.name, f.size, f.mtime) for f in t.list_dir(ftp_workdir.remote))
        assert listed == [("a.json", 5, MTIME), ("b.json", len(big), MTIME)]
        assert t.stat(f"{ftp_workdir.remote}/a.json") == RemoteFile("a.json", 5, MTIME)
        assert t.stat(f"{ftp_workdir.remote}/no") is None
        assert t.read_file(f"{ftp_workdir.remote}/b.json", max_bytes=len(big)) == big
        with pytest.raises(TransportError) as info:
            t.read_file(f"{ftp_workdir.remote}/b.json", max_bytes=1000)
        assert info.value.code == ErrorCode.TOO_LARGE
        assert t.read_file(f"{ftp_workdir.remote}/a.json", max_bytes=5) == b"12345"  # still usable


def test_move_no_overwrite_adds_numeric_suffix(settings, ftp_workdir) -> None:
    (ftp_workdir.local / "in").mkdir()
    (ftp_workdir.local / "done").mkdir()
    (ftp_workdir.local / "in" / "ack.json").write_bytes(b"new")
    for name in ("ack.json", "ack-1.json"):
        (ftp_workdir.local / "done" / name).write_bytes(b"old")
    with get_transport(settings) as t:
        moved = t.move_no_overwrite(f"{ftp_workdir.remote}/in/ack.json", f"{ftp_workdir.remote}/done")
    assert moved == f"{ftp_workdir.remote}/done/ack-2.json"
    assert sorted(os.listdir(ftp_workdir.local / "done")) == ["ack-1.json", "ack-2.json", "ack.json"]
    assert (ftp_workdir.local / "done" / "ack-2.json").read_bytes() == b"new"
    assert (ftp_workdir.local / "done" / "ack.json").read_bytes() == b"old"
    assert not (ftp_workdir.local / "in" / "ack.json").exists()


def test_makedirs_creates_parents_and_accepts_existing(settings, ftp_workdir) -> None:
    with get_transport(settings) as t:
        t.makedirs(f"{ftp_workdir.remote}/a/b/c")
        t.makedirs(f"{ftp_workdir.remote}/a/b/c")
        t.makedirs(f"{ftp_workdir.remote}/a")
    assert (ftp_workdir.local / "a" / "b" / "c").is_dir()


def test_missing_paths_are_permanent_not_found(settings, ftp_workdir) -> None:
    missing = f"{ftp_workdir.remote}/missing"
    failure(settings, lambda t: t.list_dir(missing), ErrorCode.NOT_FOUND, permanent=True)
    failure(settings, lambda t: t.read_file(f"{missing}.json", max_bytes=10), ErrorCode.NOT_FOUND, permanent=True)
    failure(settings, lambda t: t.put_atomic(missing, "x.json", b"x"), ErrorCode.NOT_FOUND, permanent=True)


def test_read_only_user_gets_permission_denied(request, settings, ftp_workdir) -> None:
    ro = request.getfixturevalue(f"{request.node.callspec.params['settings']}_settings")(readonly=True)
    (ftp_workdir.local / "a.json").write_bytes(b"keep")
    failure(ro, lambda t: t.put_atomic(ftp_workdir.remote, "b.json", b"x"), ErrorCode.PERMISSION, permanent=True)
    failure(ro, lambda t: t.remove(f"{ftp_workdir.remote}/a.json"), ErrorCode.PERMISSION, permanent=True)
    failure(ro, lambda t: t.makedirs(f"{ftp_workdir.remote}/new"), ErrorCode.PERMISSION, permanent=True)
    with get_transport(ro) as t:  # reading and creating nothing new is allowed
        t.makedirs(ftp_workdir.remote)
        assert t.read_file(f"{ftp_workdir.remote}/a.json", max_bytes=10) == b"keep"
    assert os.listdir(ftp_workdir.local) == ["a.json"]


# -- server specifics -------------------------------------------------------------
def test_list_dir_without_mlsd_matches_mlsd(ftp_settings, ftp_nomlsd_settings, ftp_workdir) -> None:
    for i in range(30):
        (ftp_workdir.local / f"f{i}.json").write_bytes(b"x" * i)
    (ftp_workdir.local / "dir").mkdir()
    results = []
    for make in (ftp_settings, ftp_nomlsd_settings):
        with get_transport(make()) as t:
            results.append(sorted(t.list_dir(ftp_workdir.remote), key=lambda f: f.name))
    assert results[0] == results[1] and len(results[0]) == 30


def test_failed_listing_leaves_binary_mode_for_size(ftp_nomlsd_settings, ftp_workdir) -> None:
    # ftplib sends TYPE A before NLST; SIZE in ASCII mode would make an existing file look missing.
    (ftp_workdir.local / "a.json").write_bytes(b"\r\n")
    with get_transport(ftp_nomlsd_settings()) as t:
        with pytest.raises(TransportError):
            t.list_dir(f"{ftp_workdir.remote}/missing")
        assert t.stat(f"{ftp_workdir.remote}/a.json").size == 2
        assert t.read_file(f"{ftp_workdir.remote}/a.json", max_bytes=2) == b"\r\n"


def test_server_rename_overwrites_so_no_overwrite_checks_first(ftp_server: FTPDServer, ftp_workdir) -> None:
    for name in ("a", "b"):
        (ftp_workdir.local / name).write_bytes(name.encode())
    with get_transport(ftp_server.settings()) as t:
        with pytest.raises(TransportError) as info:
            t.rename_no_overwrite(f"{ftp_workdir.remote}/a", f"{ftp_workdir.remote}/b")
        assert info.value.code == ErrorCode.EXISTS
        t.rename(f"{ftp_workdir.remote}/a", f"{ftp_workdir.remote}/b")  # the raw RNTO
    assert ftp_server.rename_overwrites and (ftp_workdir.local / "b").read_bytes() == b"a"


def test_steps_recorded(ftp_settings, ftps_settings, ftps_server: FTPDServer) -> None:
    with get_transport(ftp_settings()) as t:
        assert [s.name for s in t.steps] == ["TCP connect", "Authentication", "Binary mode"]
    with get_transport(ftps_settings()) as t:
        names = [s.name for s in t.steps]
        assert names == ["TCP connect", "TLS", "Authentication", "Data protection", "Binary mode"]
        assert t.steps[1].detail == ftps_server.fingerprint and all(s.ok for s in t.steps)


# -- FTPS identity and encryption -------------------------------------------------
def test_ftps_data_channel_is_encrypted(ftps_server: FTPDServer, ftp_workdir) -> None:
    before = len(ftps_server.data_channels)
    with get_transport(ftps_server.settings()) as t:
        t.put_atomic(ftp_workdir.remote, "x.json", b"secret")
        assert [f.name for f in t.list_dir(ftp_workdir.remote)] == ["x.json"]
    seen = ftps_server.data_channels[before:]
    assert seen and all(seen)  # the server also refuses PASV without PROT P (tls_data_required)


def test_ftps_pin_accepts_other_spellings(ftps_server: FTPDServer) -> None:
    raw = bytes.fromhex(ftps_server.fingerprint[7:].replace(":", ""))
    for pin in (raw.hex(), "sha256:" + raw.hex(), "SHA256:" + base64.b64encode(raw).decode().rstrip("=")):
        with get_transport(ftps_server.settings(host_key=pin)) as t:
            assert t.steps[1].ok


def test_ftps_unknown_certificate_reports_fingerprint(ftps_server: FTPDServer) -> None:
    err = failure(ftps_server.settings(host_key=""), lambda t: None, ErrorCode.HOST_KEY_UNKNOWN, permanent=True)
    assert isinstance(err, HostKeyError)
    assert err.presented_fingerprint == err.presented_key == ftps_server.fingerprint
    assert ftps_server.fingerprint in err.message


def test_ftps_changed_certificate(ftps_server: FTPDServer) -> None:
    pin = "SHA256:" + ":".join(["AB"] * 32)
    err = failure(ftps_server.settings(host_key=pin), lambda t: None, ErrorCode.HOST_KEY_CHANGED, permanent=True)
    assert isinstance(err, HostKeyError)
    assert (err.presented_fingerprint, err.expected_fingerprint) == (ftps_server.fingerprint, pin)


def test_ftps_certificate_trusted_by_ca_store_needs_no_pin(ftps_server: FTPDServer, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ftps_server.certfile))  # OpenSSL's default store, read per context
    with get_transport(ftps_server.settings(host_key="")) as t:
        assert t.steps[1].detail == ftps_server.fingerprint


# -- connection failures ------------------------------------------------------------
def test_wrong_password_is_permanent_auth(ftp_settings) -> None:
    settings = ftp_settings(password="Wr0ng-pa55word")
    with pytest.raises(TransportError) as info:
        get_transport(settings).open()
    assert (info.value.code, info.value.permanent) == (ErrorCode.AUTH, True)
    assert "Wr0ng-pa55word" not in str(info.value)


def test_nothing_listening_is_transient_refused() -> None:
    settings = TransportSettings(kind="ftp", host="127.0.0.1", port=closed_port(), username="u", password="pw-x1")
    failure(settings, lambda t: None, ErrorCode.REFUSED, permanent=False)


@pytest.mark.parametrize("kind", ["ftp", "ftps"])
def test_silent_server_times_out(kind: str) -> None:
    with BlackholeServer() as hole:
        settings = TransportSettings(
            kind=kind, host="127.0.0.1", port=hole.port, username="u", password="pw-x1", connect_timeout=1
        )
        started = time.monotonic()
        t: Transport = get_transport(settings)
        with pytest.raises(TransportError) as info:
            t.open()
        t.close()
    assert time.monotonic() - started < 5
    assert (info.value.code, info.value.permanent) == (ErrorCode.TIMEOUT, False)
    assert t.steps[-1].name == "TCP connect" and not t.steps[-1].ok


def test_close_is_idempotent_and_silent(ftp_settings) -> None:
    t = get_transport(ftp_settings())
    t.close()  # never opened
    t.open()
    t.close()
    t.close()


# -- wall-clock deadlines against a server that drips (socket timeouts restart on every byte) ----
MARGIN = 3.0  # generous: the deadline is the timeout itself; this only absorbs a slow CI machine


def timed_failure(action) -> tuple[TransportError, float]:
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        action()
    return info.value, time.monotonic() - started


def assert_timeout(err: TransportError, elapsed: float, limit: float, password: str) -> None:
    assert (err.code, err.permanent) == (ErrorCode.TIMEOUT, False), err.message
    assert elapsed < limit + MARGIN, f"took {elapsed:.1f} s for a {limit} s deadline"
    assert password not in err.message


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_dripping_banner_ends_at_connect_timeout(tls: bool) -> None:
    with DrippingFTPServer("banner", tls=tls) as server:
        settings = server.settings(connect_timeout=1.0, operation_timeout=30.0)
        t = get_transport(settings)
        err, elapsed = timed_failure(t.open)
        t.close()
    assert_timeout(err, elapsed, settings.connect_timeout, settings.password)
    assert t.steps[-1].name == "TCP connect" and not t.steps[-1].ok


def test_dripping_tls_handshake_ends_at_connect_timeout() -> None:
    with DrippingFTPServer("handshake") as server:
        settings = server.settings(connect_timeout=1.0, operation_timeout=30.0)
        t = get_transport(settings)
        err, elapsed = timed_failure(t.open)
        t.close()
    assert_timeout(err, elapsed, settings.connect_timeout, settings.password)
    assert [s.name for s in t.steps] == ["TCP connect", "TLS"] and not t.steps[-1].ok


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_dripping_reply_ends_at_operation_timeout_then_reconnects(tls: bool) -> None:
    with DrippingFTPServer("reply", tls=tls) as server:
        settings = server.settings(operation_timeout=1.0)
        t = get_transport(settings)
        t.open()
        try:
            err, elapsed = timed_failure(lambda: t.stat("/drip.json"))
            assert_timeout(err, elapsed, settings.operation_timeout, settings.password)
            assert t.stat("/ok.json") == RemoteFile("ok.json", 3, MTIME)  # usable again
            assert server.connections == 2
        finally:
            started = time.monotonic()
            t.close()  # QUIT drips too: close gives up after its own 2 s
            assert time.monotonic() - started < 2 + MARGIN


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_dripping_download_and_listing_end_at_operation_timeout(tls: bool) -> None:
    with DrippingFTPServer("data", tls=tls) as server:
        settings = server.settings(operation_timeout=1.0)
        with get_transport(settings) as t:
            err, elapsed = timed_failure(lambda: t.read_file("/drip.json", max_bytes=1_000_000))
            assert_timeout(err, elapsed, settings.operation_timeout, settings.password)
            assert t.read_file("/ok.json", max_bytes=10) == b"abc"  # reconnected
            err, elapsed = timed_failure(lambda: t.list_dir("/drip"))
            assert_timeout(err, elapsed, settings.operation_timeout, settings.password)
            assert [f.name for f in t.list_dir("/ok")] == ["ok.json"]
        assert server.connections == 3
