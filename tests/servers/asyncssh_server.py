"""An in-process asyncssh SFTP server with the interface of :class:`SSHDServer`.

Only a stand-in for machines without ``/usr/sbin/sshd`` outside CI: files are
written by this process, so both users are the current OS user underneath,
and its SFTP rename, like OpenSSH's, refuses an existing target.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Self

import asyncssh
from cryptography.hazmat.primitives import serialization

from .sshd import KEY_KINDS, PASSWORD_USER, SSHTestServer, SSHUser, _generate, public_line


class AsyncSSHServer(SSHTestServer):
    host = "127.0.0.1"
    kind = "asyncssh"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="asyncssh-test-"))
        self.port = 0
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.touch()
        self.host_keys: dict[str, str] = {}
        self.host_key_paths: dict[str, Path] = {}
        self._server_keys = []
        for kind in KEY_KINDS:
            key = _generate(kind)
            text = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
            path = self.dir / f"ssh_host_{kind}_key"
            path.write_bytes(text)
            path.chmod(0o600)
            self.host_keys[kind] = public_line(key)
            (self.dir / f"ssh_host_{kind}_key.pub").write_text(self.host_keys[kind] + "\n")
            self.host_key_paths[kind] = path
            self._server_keys.append(asyncssh.import_private_key(text))
        home = self.dir / "home"
        readonly = self.dir / "readonly"
        readonly.mkdir()
        (readonly / "existing.txt").write_bytes(b"read me\n")
        # Root ignores mode bits, so there is no read-only directory then.
        ro: Path | None = None if os.geteuid() == 0 else readonly
        if ro is not None:
            ro.chmod(0o555)
        uid, gid = os.getuid(), os.getgid()
        self.key_user = SSHUser(getpass.getuser(), uid, gid, home / "key", readonly_dir=ro)
        self.password_user: SSHUser | None = SSHUser(
            PASSWORD_USER, uid, gid, home / "password", secrets.token_urlsafe(18), ro
        )
        for user in (self.key_user, self.password_user):
            user.base_dir.mkdir(parents=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asyncssh-server", daemon=True)
        self._acceptor = None

    def _authorized_blobs(self) -> set[bytes]:
        lines = self.authorized_keys.read_text().splitlines()
        return {base64.b64decode(line.split()[1]) for line in lines if line.strip()}

    def _server_factory(self) -> asyncssh.SSHServer:
        outer = self

        class _Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                user = outer.password_user
                return user is not None and username == user.name and secrets.compare_digest(password, user.password)

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
                return username == outer.key_user.name and key.public_data in outer._authorized_blobs()

        return _Server()

    async def _listen(self) -> None:
        self._acceptor = await asyncssh.listen(
            self.host, 0, server_host_keys=self._server_keys, server_factory=self._server_factory,
            sftp_factory=True, allow_scp=False, process_factory=None,
        )  # fmt: skip
        self.port = self._acceptor.sockets[0].getsockname()[1]

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._acceptor is not None:

            async def _close() -> None:
                self._acceptor.close()
                await self._acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._acceptor = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if os.geteuid() != 0:
            (self.dir / "readonly").chmod(0o755)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return "(in-process asyncssh server: no log file)"
