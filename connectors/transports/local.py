"""A local or mounted directory (NFS, SMB, a bind mount) as a dropzone.

``settings.host``, when set, is the dropzone's root directory and every path
(``/inbound``, ``/outbound/processed``) is taken inside it, so the same paths
work as on an FTP/SFTP server; when empty, paths are used as given.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from stat import S_ISREG

from .base import (
    ErrorCode,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
)

# link() errors meaning "this filesystem has no hard links" (FAT/exFAT, many SMB/NFS mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


class LocalTransport(Transport):
    """Files on this machine's filesystem; nothing to connect to."""

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self._root = settings.host

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        with self.step("Local filesystem") as rec:
            rec.detail = f"root {self._root}" if self._root else "paths used as given"

    def close(self) -> None:
        pass

    # -- helpers -------------------------------------------------------------
    def _real(self, path: str) -> str:
        if not self._root:
            return path
        if ".." in path.split("/"):  # the root is a boundary, as an FTP server's home would be
            raise TransportError(f"path {path!r} leaves the dropzone root", permanent=True, code=ErrorCode.PERMISSION)
        return os.path.join(self._root, path.lstrip("/"))

    @contextmanager
    def _errors(self, operation: str, path: str) -> Iterator[None]:
        where = f"local {operation} {self._real(path) if path else ''}".rstrip()
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
            raise TransportError(f"{where} failed: {err.strerror}", permanent=True, code=ErrorCode.NOT_FOUND) from err
        except FileExistsError as err:
            raise TransportError(f"{where} failed: {err.strerror}", permanent=True, code=ErrorCode.EXISTS) from err
        except PermissionError as err:
            raise TransportError(f"{where} failed: {err.strerror}", permanent=True, code=ErrorCode.PERMISSION) from err
        except OSError as err:
            raise TransportError(f"{where} failed: {err.strerror or err}", code=ErrorCode.IO) from err

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        # Makes a rename/link durable; some mounts (SMB, some FUSE) cannot fsync a directory.
        try:
            fd = os.open(directory or ".", os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- primitives ----------------------------------------------------------
    def list_dir(self, directory: str) -> list[RemoteFile]:
        files = []
        with self._errors("list", directory), os.scandir(self._real(directory)) as entries:
            for entry in entries:
                try:
                    if not entry.is_file():  # follows symlinks, like a server would
                        continue
                    st = entry.stat()
                except FileNotFoundError:  # removed while listing
                    continue
                files.append(RemoteFile(entry.name, st.st_size, st.st_mtime))
        return files

    def stat(self, path: str) -> RemoteFile | None:
        """A file (or, so that nothing is ever overwritten, a directory with size 0) or None."""
        with self._errors("stat", path):
            try:
                st = os.stat(self._real(path))
            except (FileNotFoundError, NotADirectoryError):
                return None
        size = st.st_size if S_ISREG(st.st_mode) else 0
        return RemoteFile(posixpath.basename(path.rstrip("/")), size, st.st_mtime)

    def read_file(self, path: str, *, max_bytes: int) -> bytes:
        with self._errors("read", path), open(self._real(path), "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TransportError(
                f"local read {self._real(path)} failed: file exceeds {max_bytes} bytes",
                permanent=True, code=ErrorCode.TOO_LARGE,
            )
        return data

    def write_file(self, path: str, data: bytes) -> None:
        with self._errors("write", path), open(self._real(path), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the size check and rename must see bytes that survive a crash

    def rename(self, src: str, dst: str) -> None:
        with self._errors("rename", src):
            os.rename(self._real(src), self._real(dst))

    def rename_no_overwrite(self, src: str, dst: str) -> None:
        """link + unlink: link() fails atomically when ``dst`` exists, so no writer can be overwritten."""
        real_src, real_dst = self._real(src), self._real(dst)
        with self._errors("rename", src):
            try:
                os.link(real_src, real_dst)
            except FileExistsError:
                raise TransportError(f"{real_dst} already exists", permanent=True, code=ErrorCode.EXISTS) from None
            except OSError as err:
                if err.errno not in _NO_HARD_LINKS:
                    raise
                # No hard links here: check, then rename.  A file created at ``dst`` in
                # between would be replaced - the best such a filesystem allows.
                super().rename_no_overwrite(src, dst)
            else:
                try:
                    os.unlink(real_src)
                except FileNotFoundError:
                    # Someone else moved the same file meanwhile and their link came first:
                    # ours is a second copy of a file already filed. Take it back, report "not found".
                    os.unlink(real_dst)
                    raise
        for directory in {os.path.dirname(real_dst), os.path.dirname(real_src)}:
            self._fsync_dir(directory)

    def remove(self, path: str) -> None:
        with self._errors("delete", path):
            os.unlink(self._real(path))

    def makedirs(self, path: str) -> None:
        with self._errors("create directory", path):
            os.makedirs(self._real(path), exist_ok=True)
