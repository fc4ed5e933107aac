"""A local or mounted directory (NFS, SMB, a bind mount) as a dropzone, jailed.

``settings.local_root`` is the operator's jail (``LOCAL_DROPZONE_ROOT``); it is
resolved once when the transport opens and may itself be a symlink.
``settings.local_tenant`` is the organization's own directory of it (its slug,
made when missing; never a symlink): one organization's connections cannot
reach another's.  ``settings.host``, when set, is the connection's own
sub-directory inside that (``erp``).  Every path the pipeline passes
(``/inbound``, ``outbound/processed``) resolves inside root/tenant[/host], like
on an FTP server with a chroot; ``..`` and NUL are refused.

Below the root, symlinks are input from the ERP, never a way out: every
directory component is opened with ``O_NOFOLLOW`` relative to its parent's
descriptor and every operation works on ``dir_fd``, so a link swapped in
between a check and a use is refused too.  A symlink in a listed directory is
listed (as itself) so the poller can file it away; it can be moved or removed
as itself, never read or written through.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from stat import S_ISDIR, S_ISLNK, S_ISREG

from .base import (
    ErrorCode,
    Listing,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
    first_entries,
    permanent,
)

# link() errors meaning "this filesystem has no hard links" (FAT/exFAT, many SMB/NFS mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in the dropzone must not block a worker forever (no effect on regular files).
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _BadPath(Exception):
    """A path that cannot name anything inside the dropzone (``..``, NUL)."""


class _LinkRefused(Exception):
    """A symlink where the walk needed a real directory or file; ``shown`` is its dropzone path."""

    def __init__(self, shown: str) -> None:
        super().__init__(shown)
        self.shown = shown


def _parts(path: str) -> list[str]:
    """The components of ``path`` below the dropzone; absolute and relative paths mean the same."""
    if "\x00" in path:
        raise _BadPath("contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:  # the root is a boundary, as an FTP server's home would be
        raise _BadPath("leaves the dropzone ('..')")
    return parts


def _shown(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def _display(path: str) -> str:
    """``path`` as a message shows it: inside the dropzone, even when it cannot be parsed."""
    return _shown([p for p in path.replace("\x00", "\\0").split("/") if p not in ("", ".")])


def _lexists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _enter(dir_fd: int, name: str, shown: str) -> int:
    """A new descriptor of sub-directory ``name`` of ``dir_fd``; a symlink is refused, never followed."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        # O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR (Linux) or ELOOP: tell a link from a file.
        if err.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(dir_fd, name):
            raise _LinkRefused(shown) from err
        raise


def _open_file(dir_fd: int, name: str, flags: int, shown: str) -> int:
    try:
        return os.open(name, flags | _FILE_FLAGS, 0o666, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW's answer for a symlink
            raise _LinkRefused(shown) from err
        raise


def _require_regular(fd: int) -> None:
    mode = os.fstat(fd).st_mode
    if S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    if not S_ISREG(mode):  # FIFO, socket, device: not a file an ERP exchanges
        raise PermissionError(errno.EACCES, "not a regular file")


#: A file with two names may be in the middle of a move (link, then unlink: microseconds); it is looked at again
#: this much later before it counts as a hard link planted here.
_MOVE_SETTLE_SECONDS = 0.05


def _require_single_link(fd: int, dir_fd: int, name: str) -> None:
    """A hard link planted in the dropzone names a file elsewhere on the filesystem: never read through it.

    Another poller moving the same file (after an expired claim) links it into processed/ before it unlinks it
    here: that second name is gone a moment later (then the file is reported gone, as a move would be).
    """
    if os.fstat(fd).st_nlink == 1:
        return
    time.sleep(_MOVE_SETTLE_SECONDS)
    os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # FileNotFoundError: it was moved meanwhile
    if os.fstat(fd).st_nlink > 1:
        raise PermissionError(errno.EACCES, "the file has another hard link (outside the dropzone, maybe); not read")


def _fsync_dir(fd: int) -> None:
    # Makes a rename/link durable; some mounts (SMB, some FUSE) cannot fsync a directory.
    with suppress(OSError):
        os.fsync(fd)


class LocalTransport(Transport):
    """Files on this machine's filesystem, inside the operator's dropzone root; nothing to connect to."""

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self._base_fd: int | None = None  # root[/host], held open for the transport's life

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        with self.step("Local filesystem") as rec:
            self.close()
            self._base_fd = self._open_base()
            host = "/".join(_parts(self.settings.host))
            rec.detail = f"directory {host} in the dropzone root" if host else "the dropzone root"

    def close(self) -> None:
        fd, self._base_fd = self._base_fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)

    def _open_base(self) -> int:
        """Open the operator's root (resolved once; it may be a symlink), then the connection's sub-directory."""
        root = self.settings.local_root
        if not root:
            raise permanent("no local dropzone root is configured: the operator must set LOCAL_DROPZONE_ROOT "
                            "before local connections can work", ErrorCode.CONFIG)
        try:
            host = _parts(self.settings.host)
        except _BadPath as err:
            raise permanent(f"the connection's directory (host) {err}", ErrorCode.CONFIG) from err
        try:
            root_fd = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
            raise permanent(f"the local dropzone root (LOCAL_DROPZONE_ROOT) cannot be opened: {err.strerror}",
                            ErrorCode.CONFIG) from err
        except OSError as err:  # e.g. a stale NFS handle: may heal
            raise TransportError(f"the local dropzone root (LOCAL_DROPZONE_ROOT) cannot be opened: {err.strerror}",
                                 code=ErrorCode.IO) from err
        try:
            with self._errors("open", self.settings.host):
                if self.settings.local_tenant:
                    tenant_fd = self._tenant(root_fd, self.settings.local_tenant)
                    os.close(root_fd)
                    root_fd = tenant_fd
                return self._descend(root_fd, host)
        finally:
            os.close(root_fd)

    @staticmethod
    def _tenant(root_fd: int, name: str) -> int:
        """The organization's directory of the root (made when missing), entered without following a link."""
        if "/" in name or name in ("", ".", ".."):
            raise _BadPath("names no directory of its own")
        with suppress(FileExistsError):
            os.mkdir(name, 0o750, dir_fd=root_fd)
        return _enter(root_fd, name, "/")

    def _base(self) -> int:
        if self._base_fd is None:  # used without open(): open quietly
            self._base_fd = self._open_base()
        return self._base_fd

    # -- the walk --------------------------------------------------------------
    @staticmethod
    def _descend(start_fd: int, parts: list[str]) -> int:
        """A new descriptor of directory ``parts`` below ``start_fd``, no component followed as a link."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=start_fd)
        try:
            for i, part in enumerate(parts):
                child = _enter(fd, part, _shown(parts[: i + 1]))
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def _dir(self, parts: list[str]) -> Iterator[int]:
        fd = self._descend(self._base(), parts)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the directory holding ``path``, its last component); the dropzone itself is "."."""
        parts = _parts(path)
        with self._dir(parts[:-1]) as fd:
            yield fd, parts[-1] if parts else "."

    @contextmanager
    def _errors(self, operation: str, path: str) -> Iterator[None]:
        # Messages name the path inside the dropzone, never the operator's absolute root.
        where = f"local {operation} {_display(path)}"
        try:
            yield
        except _BadPath as err:
            raise permanent(f"{where} refused: the path {err}", ErrorCode.PERMISSION) from err
        except _LinkRefused as err:
            raise permanent(f"{where} refused: {err.shown} is a symbolic link, and links in a dropzone are "
                            "never followed", ErrorCode.SYMLINK) from err
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
            raise permanent(f"{where} failed: {err.strerror}", ErrorCode.NOT_FOUND) from err
        except FileExistsError as err:
            raise permanent(f"{where} failed: {err.strerror}", ErrorCode.EXISTS) from err
        except PermissionError as err:
            raise permanent(f"{where} failed: {err.strerror}", ErrorCode.PERMISSION) from err
        except OSError as err:
            raise TransportError(f"{where} failed: {err.strerror or err}", code=ErrorCode.IO) from err

    # -- primitives ----------------------------------------------------------
    def list_dir(self, directory: str, *, limit: int | None = None) -> Listing:
        """Regular files and symlinks (as themselves, never their targets); the poller files links away."""
        with self._errors("list", directory), self._dir(_parts(directory)) as fd, os.scandir(fd) as entries:
            kept, truncated = first_entries(entries, limit, name=lambda entry: entry.name)
            files = Listing(truncated=truncated)
            for entry in kept:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed while listing
                    continue
                if S_ISREG(st.st_mode) or S_ISLNK(st.st_mode):
                    files.append(RemoteFile(entry.name, st.st_size, st.st_mtime))
        return files

    def stat(self, path: str) -> RemoteFile | None:
        """A file (or, so that nothing is ever overwritten, a directory or link with size 0) or None."""
        with self._errors("stat", path):
            try:
                with self._parent(path) as (fd, name):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
        size = st.st_size if S_ISREG(st.st_mode) else 0
        return RemoteFile(name if name != "." else "", size, st.st_mtime)

    def read_file(self, path: str, *, max_bytes: int, size_hint: int | None = None) -> bytes:
        with self._errors("read", path), self._parent(path) as (dir_fd, name):
            fd = _open_file(dir_fd, name, os.O_RDONLY, _display(path))
            with os.fdopen(fd, "rb") as fh:
                _require_regular(fd)
                _require_single_link(fd, dir_fd, name)
                data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise permanent(f"local read {_display(path)} failed: file exceeds {max_bytes} bytes",
                            ErrorCode.TOO_LARGE)
        return data

    def write_file(self, path: str, data: bytes) -> None:
        """Creates ``path`` afresh (O_EXCL): whatever had its name (our stale temp file, or a hard link or
        symlink someone planted there) is unlinked first, never opened through."""
        with self._errors("write", path), self._parent(path) as (dir_fd, name):
            with suppress(FileNotFoundError):
                if not S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dir_fd)
            fd = _open_file(dir_fd, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _display(path))
            with os.fdopen(fd, "wb") as fh:
                _require_regular(fd)
                fh.write(data)
                fh.flush()
                os.fsync(fd)  # the size check and rename must see bytes that survive a crash

    def rename(self, src: str, dst: str) -> None:
        """Renames the entry itself (a symlink stays a symlink); replaces ``dst`` like rename(2)."""
        with self._errors("rename", src), self._parent(src) as (src_fd, src_name), \
                self._parent(dst) as (dst_fd, dst_name):
            os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    def rename_no_overwrite(self, src: str, dst: str) -> None:
        """link + unlink: link() fails atomically when ``dst`` exists, so no writer can be overwritten.

        The link is made to the entry itself (``follow_symlinks=False``): moving a symlink moves the
        link, never its target.
        """
        with self._errors("rename", src), self._parent(src) as (src_fd, src_name), \
                self._parent(dst) as (dst_fd, dst_name):
            self._link_unlink(src_fd, src_name, dst_fd, dst_name, _display(dst))
            _fsync_dir(dst_fd)
            if _parts(src)[:-1] != _parts(dst)[:-1]:
                _fsync_dir(src_fd)

    @staticmethod
    def _link_unlink(src_fd: int, src_name: str, dst_fd: int, dst_name: str, shown_dst: str) -> None:
        exists = permanent(f"local rename to {shown_dst} refused: it already exists", ErrorCode.EXISTS)
        try:
            os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except FileExistsError:
            raise exists from None
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            # No hard links here: check, then rename.  A file created at ``dst`` in
            # between would be replaced - the best such a filesystem allows.
            if _lexists(dst_fd, dst_name):
                raise exists from None
            os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        try:
            os.unlink(src_name, dir_fd=src_fd)
        except OSError:
            # Someone else moved the same file meanwhile and their link came first (not found), or the source
            # cannot be unlinked (a read-only directory): our link is a second name for it. Take it back.
            os.unlink(dst_name, dir_fd=dst_fd)
            raise

    def remove(self, path: str) -> None:
        """Removes the entry itself: a symlink goes, its target stays."""
        with self._errors("delete", path), self._parent(path) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def makedirs(self, path: str) -> None:
        with self._errors("create directory", path):
            parts = _parts(path)
            fd = os.open(".", _DIR_FLAGS, dir_fd=self._base())
            try:
                for i, part in enumerate(parts):
                    with suppress(FileExistsError):  # an existing directory is fine; a link is refused below
                        os.mkdir(part, dir_fd=fd)
                    child = _enter(fd, part, _shown(parts[: i + 1]))
                    os.close(fd)
                    fd = child
            finally:
                os.close(fd)
