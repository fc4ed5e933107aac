"""``list_dir(limit=…)`` on every transport: at most ``limit`` entries read, ``truncated`` when some were left.

A local directory, the real OpenSSH sshd, pyftpdlib (MLSD, FTPS, and NLST where MLSD is missing).  Servers that
never end a listing are in tests/security/test_hostile_bounds.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.transports import LISTING_LIMIT, Listing, get_transport
from connectors.transports.base import TransportSettings


@dataclass(frozen=True)
class Zone:
    settings: TransportSettings
    remote: str  # the directory as the transport names it
    disk: Path  # the same directory on disk

    def files(self, count: int, prefix: str = "ack_") -> list[str]:
        names = [f"{prefix}{n:03d}.json" for n in range(count)]
        for name in names:
            (self.disk / name).write_bytes(b"{}")
        return names

    def directories(self, count: int) -> None:
        for n in range(count):
            (self.disk / f"sub{n:03d}").mkdir()

    def list(self, **kwargs: int) -> Listing:
        with get_transport(self.settings) as t:
            return t.list_dir(self.remote, **kwargs)


@pytest.fixture(params=["local", "sftp", "ftp", "ftps", "ftp_nomlsd"])
def zone(request: pytest.FixtureRequest) -> Zone:
    kind = request.param
    if kind == "local":
        disk = request.getfixturevalue("local_root") / "listing"
        disk.mkdir()
        return Zone(request.getfixturevalue("local_settings")(), "/listing", disk)
    if kind == "sftp":
        disk = request.getfixturevalue("sftp_dir")
        return Zone(request.getfixturevalue("sftp_settings")(), str(disk), disk)
    work = request.getfixturevalue("ftp_workdir")
    return Zone(request.getfixturevalue(f"{kind}_settings")(), work.remote, work.local)


def test_a_limit_reads_that_many_entries_and_says_more_were_left(zone: Zone) -> None:
    names = zone.files(25)
    listing = zone.list(limit=10)
    assert isinstance(listing, Listing) and listing.truncated
    assert len(listing) == 10 and {f.name for f in listing} < set(names)


def test_without_a_limit_everything_is_read(zone: Zone) -> None:
    names = zone.files(25)
    listing = zone.list()
    assert sorted(f.name for f in listing) == names and not listing.truncated
    assert all(f.size == 2 for f in listing)


def test_exactly_the_limit_is_not_truncated(zone: Zone) -> None:
    names = zone.files(10)
    listing = zone.list(limit=10)
    assert sorted(f.name for f in listing) == names and not listing.truncated


def test_sub_directories_count_against_the_limit(zone: Zone) -> None:
    zone.directories(12)
    only_directories = zone.list(limit=10)
    assert only_directories == [] and only_directories.truncated  # entries were left, though no file was seen
    names = zone.files(3)
    assert sorted(f.name for f in zone.list(limit=15)) == names and not zone.list(limit=15).truncated
    assert zone.list(limit=14).truncated
    assert len(zone.list(limit=LISTING_LIMIT)) == 3


def test_the_transport_works_on_after_a_listing_cut_short(zone: Zone) -> None:
    zone.files(25)
    with get_transport(zone.settings) as t:
        assert t.list_dir(zone.remote, limit=5).truncated
        assert t.read_file(f"{zone.remote}/ack_007.json", max_bytes=10) == b"{}"
        assert len(t.list_dir(zone.remote, limit=5)) == 5
        assert len(t.list_dir(zone.remote)) == 25
