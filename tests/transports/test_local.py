"""LocalTransport against real temporary directories."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
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
        def no_link(src: str, dst: str) -> None:
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
        assert listed == [RemoteFile("a.json", 5, MTIME), RemoteFile("b.json", 2560, MTIME),
                          RemoteFile("link.json", 5, MTIME)]
        assert t.stat("/a.json") == RemoteFile("a.json", 5, MTIME)
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
        assert str(unwritable_dir) in err.message  # the admin sees the real path
        expect(ErrorCode.PERMISSION, lambda: t.remove("/locked/keep.json"))
        expect(ErrorCode.PERMISSION, lambda: t.move_no_overwrite("/locked/keep.json", "/"))
        assert t.read_file("/locked/keep.json", max_bytes=10) == b"keep"
    assert os.listdir(unwritable_dir) == ["keep.json"]


def test_paths_stay_inside_the_root(local_settings) -> None:
    with get_transport(local_settings()) as t:
        expect(ErrorCode.PERMISSION, lambda: t.list_dir("/../"))


def test_without_root_paths_are_used_as_given(local_settings, local_root: Path) -> None:
    with get_transport(local_settings(host="")) as t:
        t.put_atomic(str(local_root), "x.json", b"x")
    assert (local_root / "x.json").read_bytes() == b"x"
