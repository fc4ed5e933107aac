"""A real OpenSSH ``sshd`` on a random loopback port, for SFTP tests.

Everything lives in a temporary directory: generated host keys, an own
``sshd_config``, ``authorized_keys``, the log and the users' directories.
Running as root (as CI does) there are two users: ``root`` logs in with keys
only (``PermitRootLogin prohibit-password``) and the system user ``oftest``
logs in with a password.  Not root, sshd runs as the current user, who logs in
with keys; there is no password user then (``password_user is None``).

Also here: client key pairs in every format the transport must read
(:func:`make_client_key`).
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

SSHD = "/usr/sbin/sshd"
PASSWORD_USER = "oftest"
# The password user outlives one test session; its password is kept here so
# sessions running side by side agree on it (root-only file).
PASSWORD_FILE = Path("/var/lib/oftest-sftp/password")
KEY_KINDS = ("ed25519", "rsa", "ecdsa")


def _generate(kind: str):
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def public_line(key, comment: str = "") -> str:
    """The OpenSSH public key line of a cryptography private key."""
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def fingerprint(line: str) -> str:
    """``SHA256:…`` of an OpenSSH public key line, as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class ClientKey:
    kind: str  # ed25519 | rsa | ecdsa
    fmt: str  # openssh | pem
    private_key: str = field(repr=False)
    passphrase: str = field(repr=False)
    public_line: str = ""


def make_client_key(kind: str, fmt: str = "openssh", passphrase: str = "") -> ClientKey:
    """A fresh key pair; ``pem`` is traditional PEM for RSA/ECDSA and PKCS#8 for Ed25519."""
    key = _generate(kind)
    if fmt == "openssh":
        private_format = serialization.PrivateFormat.OpenSSH
    elif kind == "ed25519":  # Ed25519 has no "traditional" PEM form
        private_format = serialization.PrivateFormat.PKCS8
    else:
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    text = key.private_bytes(serialization.Encoding.PEM, private_format, encryption).decode()
    return ClientKey(kind, fmt, text, passphrase, public_line(key, f"test-{kind}-{fmt}"))


@dataclass
class SSHUser:
    name: str
    uid: int
    gid: int
    base_dir: Path  # this user may write here
    password: str = field(default="", repr=False)  # empty: key login only
    readonly_dir: Path | None = None  # exists, this user cannot write it (None: user is root)

    def fresh_dir(self, name: str) -> Path:
        """A new empty directory under ``base_dir`` owned by the user."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base_dir))
        os.chmod(path, 0o755)
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_password_user() -> str:
    """Create ``oftest`` if needed and (re)set its password, unlocked; returns it.

    Safe when two test sessions start at once: the first to create the
    password file wins, and a lost useradd race is fine.
    """
    PASSWORD_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(18))
    password = PASSWORD_FILE.read_text().strip()
    try:
        pwd.getpwnam(PASSWORD_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh"]
        done = subprocess.run([*command, PASSWORD_USER], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            try:
                pwd.getpwnam(PASSWORD_USER)  # created meanwhile by another session?
            except KeyError:
                raise RuntimeError(f"useradd {PASSWORD_USER} failed: {done.stderr.strip()}") from None
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{password}\n", text=True, check=True, capture_output=True)
    return password


class SSHTestServer:
    """What both SSH test servers share: context management and authorizing client keys."""

    authorized_keys: Path

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def authorize(self, public_key_line: str) -> None:
        """Allow this public key (read on every login)."""
        with open(self.authorized_keys, "a") as fh:
            fh.write(public_key_line.strip() + "\n")


class SSHDServer(SSHTestServer):
    """One sshd process; use as a context manager or call ``start``/``stop``."""

    host = "127.0.0.1"
    kind = "openssh"

    def __init__(self, *, sftp: bool = True) -> None:
        self.sftp = sftp  # False: no sftp subsystem, like an account limited to a shell
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-test-"))
        os.chmod(self.dir, 0o755)  # the password user must reach its directory below
        self.port = 0
        self.log_path = self.dir / "sshd.log"
        self.host_keys: dict[str, str] = {}  # ed25519|rsa|ecdsa -> "ssh-ed25519 AAAA…"
        self.host_key_paths: dict[str, Path] = {}
        self._proc: subprocess.Popen | None = None
        self._make_host_keys()
        self._make_users()
        # Per user (%u), so only the key user accepts the test keys.
        self.authorized_keys = self.dir / f"authorized_keys.{self.key_user.name}"
        self.authorized_keys.touch()

    # -- setup ---------------------------------------------------------------
    def _make_host_keys(self) -> None:
        for kind in KEY_KINDS:
            key = _generate(kind)
            path = self.dir / f"ssh_host_{kind}_key"
            text = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
            self.host_keys[kind] = public_line(key)
            (self.dir / f"ssh_host_{kind}_key.pub").write_text(self.host_keys[kind] + "\n")
            self.host_key_paths[kind] = path

    def _make_users(self) -> None:
        home = self.dir / "home"
        home.mkdir(mode=0o755)
        readonly = self.dir / "readonly"
        readonly.mkdir()
        (readonly / "existing.txt").write_bytes(b"read me\n")
        self.password_user: SSHUser | None = None
        if os.geteuid() == 0:
            os.chmod(readonly, 0o755)  # root-owned: only root may write
            self.key_user = SSHUser("root", 0, 0, home / "root")
            self.key_user.base_dir.mkdir(mode=0o755)
            password = _ensure_password_user()
            info = pwd.getpwnam(PASSWORD_USER)
            base = home / PASSWORD_USER
            base.mkdir(mode=0o755)
            os.chown(base, info.pw_uid, info.pw_gid)
            self.password_user = SSHUser(PASSWORD_USER, info.pw_uid, info.pw_gid, base, password, readonly)
        else:
            os.chmod(readonly, 0o555)  # mode bits bind a non-root owner
            name = getpass.getuser()
            self.key_user = SSHUser(name, os.getuid(), os.getgid(), home / name, readonly_dir=readonly)
            self.key_user.base_dir.mkdir(mode=0o755)

    def _write_config(self) -> Path:
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            *(f"HostKey {p}" for p in self.host_key_paths.values()),
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir}/authorized_keys.%u",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password_user else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            *(["Subsystem sftp internal-sftp"] if self.sftp else []),
            "LogLevel VERBOSE",
            "MaxSessions 50",
            "MaxStartups 100",
            "MaxAuthTries 10",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
        ]
        config = self.dir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        # OpenSSH >= 9.8 penalises sources that fail to log in; the failure
        # tests would lock 127.0.0.1 out.  Older versions reject the option.
        penalties = config.read_text() + "PerSourcePenalties no\n"
        probe = self.dir / "sshd_config.probe"
        probe.write_text(penalties)
        if subprocess.run([SSHD, "-t", "-f", str(probe)], check=False, capture_output=True).returncode == 0:
            config.write_text(penalties)
        return config

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> Self:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: install openssh-server")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = _free_port()
            config = self._write_config()
            with open(self.log_path, "ab") as log:  # sshd keeps its own copy of the descriptor
                self._proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            last_error = self._wait_ready()
            if not last_error:
                return self
            self.stop(cleanup=False)
        raise RuntimeError(f"sshd did not start: {last_error}\n--- sshd log ---\n{self.log_tail()}")

    def _wait_ready(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"sshd exited with {self._proc.returncode}"
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return ""
            except OSError:
                pass
            time.sleep(0.05)
        return f"no SSH banner on port {self.port} within {timeout}s"

    def stop(self, cleanup: bool = True) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if cleanup:
            with contextlib.suppress(OSError):
                (self.dir / "readonly").chmod(0o755)  # else its file can't be removed when not root
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers for tests ---------------------------------------------------
    def connection_pids(self) -> set[int]:
        """The processes sshd forked for connections (all descendants of the listener)."""
        children: dict[int, list[int]] = {}
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(stat_file.parent.name))
        found: set[int] = set()
        todo = [self._proc.pid] if self._proc else []
        while todo:
            for kid in children.get(todo.pop(), []):
                found.add(kid)
                todo.append(kid)
        return found

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
