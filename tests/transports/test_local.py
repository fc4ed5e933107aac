"""LocalTransport against real temporary directories: the contract, and the jail (root, host, no symlinks)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.transports import ErrorCode, get_transport
from connectors.transports.base import (
    RemoteFile,
    TransportError,
)

MTIME = 1_700_000_000


@pytest.fixture
def unwritable_dir(local_root: Path) -> Iterator[Path]:
    """``/locked`` (holding ``keep.json``): a directory the kernel refuses to change, even for root.

    Mode bits do not stop root, so as root the immutable attribute is used
    (``chattr +i``: needs CAP_LINUX_IMMUTABLE and ext4/xfs/btrfs/recent tmpfs);
    where that is impossible the test is skipped rather than faked.
    """
    locked = local_root / "locked"
    locked.mkdir()
    (locked / "keep.json").write_bytes(b"keep")
    if os.geteuid() != 0:
        locked.chmod(0o555)
        yield locked
        locked.chmod(0o755)
        return
    chattr = ["chattr", "+i", str(locked)]
    if not shutil.which("chattr") or subprocess.run(chattr, check=False, capture_output=True).returncode:
        pytest.skip("root ignores mode bits and the immutable attribute cannot be set here")
    try:
        yield locked
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


def expect(code: str, action, *, permanent: bool = True) -> TransportError:
    with pytest.raises(TransportError) as info:
        action()
    assert (info.value.code, info.value.permanent) == (code, permanent), info.value.message
    return info.value


def test_put_atomic_writes_final_file_and_leaves_no_temp(local_settings, local_root: Path) -> None:
    (local_root / "inbound").mkdir()
    with get_transport(local_settings()) as t:
        assert t.put_atomic("/inbound", "order-1.json", b'{"id": 1}') == "/inbound/order-1.json"
        assert [s.name for s in t.steps] == ["Local filesystem"]
    assert (local_root / "inbound" / "order-1.json").read_bytes() == b'{"id": 1}'
    assert os.listdir(local_root / "inbound") == ["order-1.json"]


def test_put_atomic_refuses_existing_final_file(local_settings, local_root: Path) -> None:
    (local_root / "order-1.json").write_bytes(b"original")
    with get_transport(local_settings()) as t:
        expect(ErrorCode.EXISTS, lambda: t.put_atomic("/", "order-1.json", b"new"))
    assert os.listdir(local_root) == ["order-1.json"]
    assert (local_root / "order-1.json").read_bytes() == b"original"


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "no-hard-links"])
def test_rename_no_overwrite_refuses_existing_target(local_settings, local_root, monkeypatch, hard_links) -> None:
    if not hard_links:  # e.g. a FAT or SMB mount: the check-then-rename fallback must hold too
        def no_link(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    (local_root / "a.tmp").write_bytes(b"new")
    (local_root / "a").write_bytes(b"old")
    with get_transport(local_settings()) as t:
        expect(ErrorCode.EXISTS, lambda: t.rename_no_overwrite("/a.tmp", "/a"))
        t.rename_no_overwrite("/a.tmp", "/b")
    assert (local_root / "a").read_bytes() == b"old" and (local_root / "b").read_bytes() == b"new"
    assert sorted(os.listdir(local_root)) == ["a", "b"]


def test_list_stat_and_read_with_cap(local_settings, local_root: Path) -> None:
    for name, data in [("a.json", b"12345"), ("b.json", bytes(range(256)) * 10)]:
        (local_root / name).write_bytes(data)
        os.utime(local_root / name, (MTIME, MTIME))
    (local_root / "subdir").mkdir()
    (local_root / "link.json").symlink_to(local_root / "a.json")
    with get_transport(local_settings()) as t:
        listed = sorted(t.list_dir("/"), key=lambda f: f.name)
        link = os.lstat(local_root / "link.json")  # the link itself, never its target
        assert listed == [RemoteFile("a.json", 5, MTIME), RemoteFile("b.json", 2560, MTIME),
                          RemoteFile("link.json", link.st_size, link.st_mtime)]
        assert t.stat("/a.json") == RemoteFile("a.json", 5, MTIME)
        assert t.stat("/link.json").size == 0
        assert t.stat("/subdir").size == 0 and t.stat("/nope") is None and t.stat("/a.json/x") is None
        assert t.read_file("/b.json", max_bytes=2560) == bytes(range(256)) * 10
        expect(ErrorCode.TOO_LARGE, lambda: t.read_file("/b.json", max_bytes=2559))


def test_list_dir_of_a_large_directory(local_settings, local_root: Path) -> None:
    for i in range(1000):
        (local_root / f"{i:05}.json").write_bytes(b"{}")
    with get_transport(local_settings()) as t:
        assert len(t.list_dir("/")) == 1000


def test_move_no_overwrite_adds_numeric_suffix(local_settings, local_root: Path) -> None:
    for sub in ("in", "done"):
        (local_root / sub).mkdir()
    (local_root / "in" / "ack.json").write_bytes(b"new")
    for name in ("ack.json", "ack-1.json"):
        (local_root / "done" / name).write_bytes(b"old")
    with get_transport(local_settings()) as t:
        assert t.move_no_overwrite("/in/ack.json", "/done") == "/done/ack-2.json"
    assert (local_root / "done" / "ack-2.json").read_bytes() == b"new"
    assert (local_root / "done" / "ack.json").read_bytes() == b"old"
    assert os.listdir(local_root / "in") == []


def test_makedirs_and_remove(local_settings, local_root: Path) -> None:
    with get_transport(local_settings()) as t:
        t.makedirs("/outbound/processed")
        t.makedirs("/outbound/processed")
        t.write_file("/outbound/x", b"x")
        t.remove("/outbound/x")
    assert (local_root / "outbound" / "processed").is_dir() and os.listdir(local_root / "outbound") == ["processed"]


def test_missing_paths_are_permanent_not_found(local_settings, local_root: Path) -> None:
    (local_root / "file").write_bytes(b"")
    with get_transport(local_settings()) as t:
        expect(ErrorCode.NOT_FOUND, lambda: t.list_dir("/missing"))
        expect(ErrorCode.NOT_FOUND, lambda: t.read_file("/missing.json", max_bytes=10))
        expect(ErrorCode.NOT_FOUND, lambda: t.put_atomic("/missing", "x.json", b"x"))
        expect(ErrorCode.NOT_FOUND, lambda: t.write_file("/file/x.json", b"x"))  # a file where a directory should be
        expect(ErrorCode.NOT_FOUND, lambda: t.remove("/missing.json"))


def test_unwritable_directory_is_permanent_permission_denied(local_settings, unwritable_dir: Path) -> None:
    with get_transport(local_settings()) as t:
        err = expect(ErrorCode.PERMISSION, lambda: t.put_atomic("/locked", "b.json", b"x"))
        assert "/locked/b.json" in err.message  # the admin sees the path inside the dropzone...
        assert str(unwritable_dir.parent) not in err.message  # ...not the operator's root
        expect(ErrorCode.PERMISSION, lambda: t.remove("/locked/keep.json"))
        expect(ErrorCode.PERMISSION, lambda: t.move_no_overwrite("/locked/keep.json", "/"))
        assert t.read_file("/locked/keep.json", max_bytes=10) == b"keep"
    assert os.listdir(unwritable_dir) == ["keep.json"]


def test_paths_stay_inside_the_root(local_settings) -> None:
    with get_transport(local_settings()) as t:
        expect(ErrorCode.PERMISSION, lambda: t.list_dir("/../"))


# -- the jail: LOCAL_DROPZONE_ROOT, host sub-directory, no symlink ever followed ----------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the dropzone root, holding a root-only secret: nothing may reach it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_bytes(b"TOP-SECRET")
    (path / "secret.txt").chmod(0o600)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_unset_root_is_a_config_error_naming_the_setting(local_settings) -> None:
    t = get_transport(local_settings(local_root=""))
    err = expect(ErrorCode.CONFIG, t.open)
    assert "LOCAL_DROPZONE_ROOT" in err.message
    expect(ErrorCode.CONFIG, lambda: t.list_dir("/"))  # no operation works without it, opened or not


def test_missing_root_is_a_config_error(local_settings, tmp_path: Path) -> None:
    err = expect(ErrorCode.CONFIG, get_transport(local_settings(local_root=str(tmp_path / "nope"))).open)
    assert "LOCAL_DROPZONE_ROOT" in err.message


def test_root_may_be_a_symlink(local_settings, local_root: Path, tmp_path: Path) -> None:
    (tmp_path / "root-link").symlink_to(local_root)  # the operator's choice, resolved once at open
    with get_transport(local_settings(local_root=str(tmp_path / "root-link"))) as t:
        t.makedirs("/inbound")
        t.put_atomic("/inbound", "a.json", b"a")
    assert (local_root / "inbound" / "a.json").read_bytes() == b"a"


def test_absolute_paths_outside_resolve_inside_the_root(local_settings, local_root: Path, outside: Path) -> None:
    before = snapshot(outside)
    with get_transport(local_settings()) as t:
        expect(ErrorCode.NOT_FOUND, lambda: t.list_dir(str(outside)))
        expect(ErrorCode.NOT_FOUND, lambda: t.list_dir("/root"))
        expect(ErrorCode.NOT_FOUND, lambda: t.read_file(str(outside / "secret.txt"), max_bytes=100))
        expect(ErrorCode.NOT_FOUND, lambda: t.put_atomic(str(outside), "x.json", b"x"))
        expect(ErrorCode.NOT_FOUND, lambda: t.remove(str(outside / "secret.txt")))
        assert t.stat(str(outside / "secret.txt")) is None
        t.makedirs(str(outside))  # creates the same path *inside* the root
        t.put_atomic(str(outside), "x.json", b"x")
    assert snapshot(outside) == before
    assert (local_root / str(outside).lstrip("/") / "x.json").read_bytes() == b"x"


@pytest.mark.parametrize("path", ["/../", "..", "/inbound/../..", "inbound/../../outside", "/in\x00bound"])
def test_dotdot_and_nul_are_refused(local_settings, local_root: Path, path: str) -> None:
    (local_root / "inbound").mkdir()
    with get_transport(local_settings()) as t:
        expect(ErrorCode.PERMISSION, lambda: t.list_dir(path))
        expect(ErrorCode.PERMISSION, lambda: t.stat(path))
        expect(ErrorCode.PERMISSION, lambda: t.read_file(path + "/a.json", max_bytes=10))
        expect(ErrorCode.PERMISSION, lambda: t.put_atomic(path, "a.json", b"a"))
        expect(ErrorCode.PERMISSION, lambda: t.makedirs(path + "/x"))
        expect(ErrorCode.PERMISSION, lambda: t.remove(path + "/a.json"))
    assert os.listdir(local_root / "inbound") == []


def test_host_is_the_connections_sub_directory(local_settings, local_root: Path) -> None:
    (local_root / "acme" / "inbound").mkdir(parents=True)
    (local_root / "other.json").write_bytes(b"another connection's")
    with get_transport(local_settings(host="acme")) as t:
        assert t.steps[0].detail == "directory acme in the dropzone root"
        t.put_atomic("/inbound", "a.json", b"a")
        t.put_atomic("inbound", "b.json", b"b")  # relative means the same
        assert sorted(f.name for f in t.list_dir("/inbound")) == ["a.json", "b.json"]
        assert t.stat("/other.json") is None
        expect(ErrorCode.PERMISSION, lambda: t.read_file("/../other.json", max_bytes=100))
    assert sorted(os.listdir(local_root / "acme" / "inbound")) == ["a.json", "b.json"]


def test_bad_host_directories(local_settings, local_root: Path, outside: Path) -> None:
    expect(ErrorCode.NOT_FOUND, get_transport(local_settings(host="missing")).open)
    expect(ErrorCode.CONFIG, get_transport(local_settings(host="../outside")).open)
    (local_root / "acme").symlink_to(outside)
    err = expect(ErrorCode.SYMLINK, get_transport(local_settings(host="acme")).open)
    assert "/acme" in err.message and str(outside) not in err.message


def test_processed_dir_symlink_is_refused_for_every_operation(local_settings, local_root: Path, outside) -> None:
    # The ERP made outbound/processed a symlink: an ack was once filed outside the dropzone.
    (local_root / "outbound").mkdir()
    (local_root / "outbound" / "ack_1.json").write_bytes(b"{}")
    (local_root / "outbound" / "processed").symlink_to(outside)
    before = snapshot(outside)
    with get_transport(local_settings()) as t:
        for action in (
            lambda: t.makedirs("/outbound/processed"),
            lambda: t.move_no_overwrite("/outbound/ack_1.json", "/outbound/processed"),
            lambda: t.rename("/outbound/ack_1.json", "/outbound/processed/ack_1.json"),
            lambda: t.list_dir("/outbound/processed"),
            lambda: t.stat("/outbound/processed/secret.txt"),
            lambda: t.read_file("/outbound/processed/secret.txt", max_bytes=100),
            lambda: t.write_file("/outbound/processed/x.json", b"x"),
            lambda: t.put_atomic("/outbound/processed", "x.json", b"x"),
            lambda: t.remove("/outbound/processed/secret.txt"),
            lambda: t.makedirs("/outbound/processed/deeper"),
        ):
            err = expect(ErrorCode.SYMLINK, action)
            assert "/outbound/processed is a symbolic link" in err.message
            assert str(local_root) not in err.message and str(outside) not in err.message
    assert snapshot(outside) == before
    assert sorted(os.listdir(local_root / "outbound")) == ["ack_1.json", "processed"]


def test_export_dir_symlink_is_refused(local_settings, local_root: Path, outside: Path) -> None:
    (local_root / "inbound").symlink_to(outside)
    before = snapshot(outside)
    with get_transport(local_settings()) as t:
        expect(ErrorCode.SYMLINK, lambda: t.put_atomic("/inbound", "order-1.json", b"{}"))
        expect(ErrorCode.SYMLINK, lambda: t.list_dir("/inbound"))
    assert snapshot(outside) == before


def test_symlinked_ack_is_listed_never_read_and_can_be_filed_away(local_settings, local_root, outside) -> None:
    # An ack that is a symlink to a root-only file once had its content read and echoed.
    (local_root / "outbound" / "failed").mkdir(parents=True)
    ack = local_root / "outbound" / "ack_1.json"
    ack.symlink_to(outside / "secret.txt")
    with get_transport(local_settings()) as t:
        assert [f.name for f in t.list_dir("/outbound")] == ["ack_1.json"]  # the poller sees it...
        err = expect(ErrorCode.SYMLINK, lambda: t.read_file("/outbound/ack_1.json", max_bytes=100))  # ...never reads
        assert "/outbound/ack_1.json is a symbolic link" in err.message and "TOP-SECRET" not in err.message
        assert t.stat("/outbound/ack_1.json").size == 0  # "something is there", not the target's size
        assert t.move_no_overwrite("/outbound/ack_1.json", "/outbound/failed") == "/outbound/failed/ack_1.json"
    moved = local_root / "outbound" / "failed" / "ack_1.json"
    assert moved.is_symlink() and os.readlink(moved) == str(outside / "secret.txt")  # the link moved, not the file
    assert not ack.is_symlink() and (outside / "secret.txt").read_bytes() == b"TOP-SECRET"


def test_symlinked_temp_or_final_file_is_never_written_through(local_settings, local_root, outside) -> None:
    (local_root / "inbound").mkdir()
    (local_root / "inbound" / "a.json.tmp").symlink_to(outside / "secret.txt")
    (local_root / "inbound" / "b.json").symlink_to(outside / "secret.txt")
    (local_root / "inbound" / "c.json").write_bytes(b"c")
    with get_transport(local_settings()) as t:
        t.put_atomic("/inbound", "a.json", b"ours")  # the link at the temp name went; a new file was made
        expect(ErrorCode.EXISTS, lambda: t.put_atomic("/inbound", "b.json", b"overwritten"))
        expect(ErrorCode.EXISTS, lambda: t.rename_no_overwrite("/inbound/c.json", "/inbound/b.json"))
        t.remove("/inbound/b.json")  # removes the link, never its target
    assert (outside / "secret.txt").read_bytes() == b"TOP-SECRET"
    assert sorted(os.listdir(local_root / "inbound")) == ["a.json", "c.json"]
    assert (local_root / "inbound" / "a.json").read_bytes() == b"ours"


def test_file_symlink_as_directory_component_is_refused(local_settings, local_root: Path, outside) -> None:
    (local_root / "link").symlink_to(outside / "secret.txt")
    with get_transport(local_settings()) as t:
        expect(ErrorCode.SYMLINK, lambda: t.list_dir("/link"))
        expect(ErrorCode.SYMLINK, lambda: t.stat("/link/x"))


def test_special_files_are_not_listed_or_read(local_settings, local_root: Path) -> None:
    os.mkfifo(local_root / "ack_fifo.json")  # opening it for reading would block a worker forever
    with get_transport(local_settings()) as t:
        assert t.list_dir("/") == []
        expect(ErrorCode.PERMISSION, lambda: t.read_file("/ack_fifo.json", max_bytes=10))
        expect(ErrorCode.NOT_FOUND, lambda: t.read_file("/", max_bytes=10))


def test_directory_swapped_for_a_symlink_mid_batch_never_leaks(local_settings, local_root, outside) -> None:
    """A racing ERP swaps inbound/ for a symlink again and again; no write may ever land outside."""
    inbound, parked = local_root / "inbound", local_root / "parked"
    inbound.mkdir()
    before = snapshot(outside)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            inbound.rename(parked)
            inbound.symlink_to(outside)
            inbound.unlink()
            parked.rename(inbound)
            time.sleep(0)  # let the writer run while inbound/ is real, too

    swapper = threading.Thread(target=swap)
    swapper.start()
    codes = set()
    try:
        with get_transport(local_settings()) as t:
            for i in range(2000):
                try:  # (makedirs would re-create a missing inbound/ and stop the swapper: not raced here)
                    t.write_file(f"/inbound/{i}.json", b"x")
                    t.list_dir("/inbound")
                except TransportError as err:
                    codes.add(err.code)
    finally:
        stop.set()
        swapper.join()
    assert snapshot(outside) == before and sorted(os.listdir(outside)) == ["secret.txt"]
    assert codes <= {ErrorCode.SYMLINK, ErrorCode.NOT_FOUND}


# -- hard links planted in the dropzone (issue 18, finding 4) --------------------------------------------------


def test_a_hard_link_planted_at_the_temp_name_is_replaced_never_written_through(local_settings, local_root,
                                                                               outside) -> None:
    """Anyone who can write the dropzone could plant ``<name>.json.tmp`` as a hard link to a file elsewhere on
    the same filesystem: opened with O_TRUNC, the export overwrote that file."""
    (local_root / "inbound").mkdir()
    os.link(outside / "secret.txt", local_root / "inbound" / "a.json.tmp")
    (local_root / "inbound" / "b.json.tmp").symlink_to(outside / "secret.txt")
    with get_transport(local_settings()) as t:
        t.put_atomic("/inbound", "a.json", b"our export")
        t.put_atomic("/inbound", "b.json", b"our other export")
    assert (outside / "secret.txt").read_bytes() == b"TOP-SECRET" and os.stat(outside / "secret.txt").st_nlink == 1
    assert (local_root / "inbound" / "a.json").read_bytes() == b"our export"
    assert (local_root / "inbound" / "b.json").read_bytes() == b"our other export"
    assert sorted(os.listdir(local_root / "inbound")) == ["a.json", "b.json"]


def test_a_file_with_another_hard_link_is_never_read(local_settings, local_root, outside) -> None:
    """An "ack" that is a hard link to a file elsewhere: its bytes would be stored and shown in the admin."""
    (local_root / "outbound").mkdir()
    os.link(outside / "secret.txt", local_root / "outbound" / "ack_x.json")
    with get_transport(local_settings()) as t:
        err = expect(ErrorCode.PERMISSION, lambda: t.read_file("/outbound/ack_x.json", max_bytes=100))
        assert "another hard link" in err.message
        t.makedirs("/outbound/failed")
        t.move_no_overwrite("/outbound/ack_x.json", "/outbound/failed")  # filing the name away is harmless
    assert (outside / "secret.txt").read_bytes() == b"TOP-SECRET"
