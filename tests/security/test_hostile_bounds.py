"""Issue 17, point 5: a listing's memory stays bounded whatever a hostile server sends.

Servers whose listings never end (tests/servers/endless.py): an FTP server's MLSD
(or NLST, where it has no MLSD) and an SFTP server's READDIR.  Each ``list_dir``
with the poll's limit runs in a child process of its own, so the parent can
judge its peak memory and survive a regression: the child's address space is
capped, so a listing read whole fails there instead.  The peak is the child's
VmHWM: its ``ru_maxrss`` keeps the high-water mark of the process image its
exec replaced (a fork of the whole test run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from connectors.transports import LISTING_LIMIT
from connectors.transports.base import TransportSettings
from tests.servers.endless import EndlessFTPServer, EndlessSFTPServer

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS = 256 * 2**20  # issue 17's bound for a worker
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a listing read whole fails here, not the machine
from connectors.transports import get_transport
from connectors.transports.base import TransportSettings
settings = TransportSettings(**json.load(sys.stdin))
with get_transport(settings) as t:
    listing = t.list_dir("/endless", limit=int(sys.argv[1]))
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"files": len(listing), "names": len({f.name for f in listing}), "truncated": listing.truncated,
                  "peak_rss": int(status["VmHWM"].split()[0]) * 1024}))
"""


def list_in_child(settings: TransportSettings, limit: int = LISTING_LIMIT) -> dict:
    """``list_dir("/endless", limit=limit)`` in a new Python process: what it returned and its peak RSS."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(limit)], input=json.dumps(asdict(settings)), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # a guard: the listing's deadline ends first
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "nlst"])
def test_an_endless_ftp_listing_stops_at_the_limit(mlsd: bool) -> None:
    with EndlessFTPServer(mlsd=mlsd) as server:
        got = list_in_child(server.settings(operation_timeout=60.0))
    assert got["truncated"] and got["files"] == got["names"] == LISTING_LIMIT
    assert got["peak_rss"] < MAX_RSS, got


def test_an_endless_sftp_listing_stops_at_the_limit() -> None:
    with EndlessSFTPServer() as server:
        got = list_in_child(server.settings(operation_timeout=60.0))
    assert got["truncated"] and got["files"] == got["names"] == LISTING_LIMIT
    assert got["peak_rss"] < MAX_RSS, got
