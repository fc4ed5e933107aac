"""Each organization owns its ground (issue 18): a local directory of its own, and no directory on a server and
login that another organization's connection uses too.

Local connections: the operator's LOCAL_DROPZONE_ROOT holds one directory per organization, named by its
slug (which only superusers set); every path of a local connection resolves inside its organization's
directory (the local transport's jail), so two organizations' local dropzones cannot meet.

Remote connections: two connections of different organizations to the same server and login (host, port,
user name; FTP and FTPS alike) may not share a directory: none of one's directories (export, ack, processed,
failed) may be, contain or lie inside one of the other's.  Refused when a connection is saved, and checked
again whenever a transport is built for one (a row written behind the form's back stops there).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings

from orderflow.models import Organization

#: Transports that reach the same files when they reach the same host, port and login.
FAMILIES = {"sftp": ("sftp",), "ftp": ("ftp", "ftps"), "ftps": ("ftp", "ftps")}
CLASH = ("another organization's connection uses a directory on this server and login that this one would share "
         "(the same, a parent or a sub-directory); each organization's directories must be its own")


def local_root_of(organization: Organization) -> Path:
    """The organization's own directory of the operator's LOCAL_DROPZONE_ROOT."""
    return Path(settings.LOCAL_DROPZONE_ROOT) / organization.slug


def normalized(path: str) -> str:
    """A directory as the server resolves it for one login: relative paths start in the login's home (``~``)."""
    path = path.strip()
    start = "/" if path.startswith("/") else "~/"
    return posixpath.normpath(posixpath.join(start, path)).casefold()


def directories(connection: Any) -> set[str]:
    return {normalized(p) for p in (connection.export_path, connection.ack_path, connection.effective_processed_path,
                                    connection.effective_failed_path)}


def overlap(ours: Iterable[str], theirs: Iterable[str]) -> bool:
    """Is any directory of ``ours`` the same as, inside, or a parent of one of ``theirs``?

    A path relative to the login's home and an absolute one may meet (``/`` holds the home, wherever the server
    keeps it, and so may ``/home``): not knowing the home, they count as overlapping.
    """
    theirs = list(theirs)
    for a in ours:
        for b in theirs:
            if a[:1] != b[:1]:  # "~/..." and "/...": the home's place is the server's secret
                return True
            if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                return True
    return False


def clashes(connection: Any) -> list[int]:
    """Other organizations' connections sharing a directory with this one on its server and login (their ids).

    Takes the connection's own model class from it: the model calls this from its ``clean()``.
    """
    conn: Any = connection
    family = FAMILIES.get(conn.transport)
    if family is None or not conn.host.strip():
        return []  # local: every organization has its own directory of the root
    host = conn.host.strip().rstrip(".").casefold()
    others = (type(conn).objects.filter(transport__in=family, username=conn.username)
              .exclude(organization_id=conn.organization_id).exclude(pk=conn.pk).order_by("pk"))
    ours = directories(conn)
    return [other.pk for other in others
            if other.host.strip().rstrip(".").casefold() == host and other.effective_port == conn.effective_port
            and overlap(ours, directories(other))]


def outside_its_ack_dir(connection: Any) -> list[str]:
    """The fields among processed_path and failed_path that leave the ack dir's tree (answers stay in it)."""
    ack = normalized(connection.ack_path)
    return [name for name in ("processed_path", "failed_path")
            if (value := getattr(connection, name)) and not normalized(value).startswith(ack.rstrip("/") + "/")]
