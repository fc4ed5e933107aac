"""SFTP over SSH with paramiko: pinned host key, password or key login, bounded waits.

The host key is checked right after the key exchange, before any credential is
sent, against the pinned OpenSSH public key line: no "trust on first use".
Every fault leaves as :class:`TransportError` naming the operation, the path and host:port.

Every network wait has a deadline of wall-clock time: ``connect_timeout`` for
connecting and the key exchange, ``operation_timeout`` for logging in, opening a
channel and each operation.  paramiko's channel timeout restarts with every packet,
so a server that drips a reply (or answers other requests meanwhile) would hold an
operation forever; instead the shared watchdog (``deadline.py``) closes the
operation's channel when its time is up (``ErrorCode.TIMEOUT``) and asks the SSH
connection for a keepalive reply: a connection that does not answer within a few
seconds is stuck, so it is cut, which ends every lane's wait.  A cut channel or
connection stays cut: later operations fail at once, until the transport is reopened.
"""

from __future__ import annotations

import errno
import posixpath
import socket
import stat as stat_mode
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from typing import Any

import paramiko

from . import sftp_listing, sftp_pipeline
from .base import (
    ErrorCode,
    HostKeyError,
    Listing,
    RemoteFile,
    Transport,
    TransportError,
    TransportSettings,
    first_entries,
    permanent,
    pinned_lines,
)
from .deadline import Deadline, DeadlineExceeded, after, deadline
from .ssh_keys import fingerprint, load_private_key, parse_public_key

# A host key line says "ssh-rsa", but servers sign with these algorithms (paramiko 5 dropped SHA-1).
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}
#: How long a connection may take to answer a keepalive after an operation's deadline before it is cut.
_PROBE_GRACE = 5.0
_ONE_READ = 32768  # what one SFTP READ request asks for (paramiko's request size)
_BATCH_FILE_BYTES = 65536  # larger files are put one by one: a batch shares one operation deadline
#: Closing never waits longer than this: a connection that cannot take a close message is cut.
_CLOSE_LIMIT = 2.0
#: A session kept between jobs asks the server for a sign of life this often (servers drop idle ones).
_KEEPALIVE_SECONDS = 15


def _classify(err: BaseException) -> tuple[str, bool, str]:
    """``(code, permanent, reason)`` of a low-level error, looking through its causes."""
    seen: BaseException | None = err
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, TimeoutError):  # socket.timeout is an alias
            return ErrorCode.TIMEOUT, False, str(seen) if isinstance(seen, DeadlineExceeded) else "timed out"
        if isinstance(seen, socket.gaierror):
            return ErrorCode.DNS, False, "host name could not be resolved"
        if isinstance(seen, ConnectionRefusedError):
            return ErrorCode.REFUSED, False, "connection refused (is the SSH server running on that port?)"
        if isinstance(seen, OSError) and seen.errno in (errno.EACCES, errno.EPERM):
            return ErrorCode.PERMISSION, True, "permission denied"
        if isinstance(seen, OSError) and seen.errno == errno.ENOENT:
            return ErrorCode.NOT_FOUND, True, "no such file or directory"
        seen = seen.__cause__ or seen.__context__
    if type(err) is OSError and err.errno is None:  # paramiko's IOError(status text) for SSH_FX_FAILURE
        return ErrorCode.SERVER_FAILURE, False, f"the server reported: {err}"
    return ErrorCode.NETWORK, False, f"connection lost ({type(err).__name__}{': ' if str(err) else ''}{err})"


def _spawn(target: Callable[[], Any]) -> None:
    """Run ``target`` on a short-lived daemon thread, errors ignored: what may block, off the watchdog's thread."""

    def run() -> None:
        with suppress(Exception):
            target()

    threading.Thread(target=run, name="sftp-cut", daemon=True).start()


def _shut(sock: socket.socket | None) -> None:
    """Cut the connection: paramiko's thread reads EOF, the transport dies and every channel's wait ends."""
    if sock is not None:
        with suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _abandon(chan: paramiko.Channel | None, ssh: paramiko.Transport, sock: socket.socket, grace: float) -> None:
    """An operation's deadline passed (on the watchdog thread, which must not block).

    Closing the channel ends its waits at once: paramiko closes its buffers before
    it sends the close message, which a stuck connection may never take.  Meanwhile
    the connection is asked for a keepalive reply; without one within ``grace`` the
    connection itself is stuck and is cut, so the other lanes stop waiting too.
    """
    if chan is not None:
        _spawn(chan.close)
    answered = threading.Event()

    def ask() -> None:
        with suppress(Exception):  # any reply, even a refusal, shows the connection is alive
            ssh.global_request("keepalive@openssh.com", wait=True)
        answered.set()

    _spawn(ask)
    after(grace, lambda: answered.is_set() or _shut(sock))


def _close_all(sock: socket.socket | None, *things: Any) -> None:
    """Close ``things`` in order; never raises, and never waits long: a connection that cannot take
    a close message within _CLOSE_LIMIT is stuck, so it is cut."""
    with suppress(Exception), deadline(_CLOSE_LIMIT, lambda: _shut(sock)):
        for thing in things:
            if thing is not None:
                with suppress(Exception):
                    thing.close()


class SFTPTransport(Transport):
    put_batch_size = 8  # three round trips for 8 files; a crash may leave lanes x 8 delivered but unrecorded

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        # One SFTP channel per upload thread on the same SSH connection (bench/README.md: over a
        # 4 ms link 2 channels move 1.8x the files of one, 4 channels 2.8x).
        self.max_lanes = max(1, settings.upload_channels)
        self.where = f"{settings.host}:{settings.port or 22}"
        self._sock: socket.socket | None = None
        self._ssh: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._running: Deadline | None = None  # the deadline of the operation under way on this handle
        self._pool: list[SFTPTransport] = []  # lanes kept open for the next parallel run of this connection

    @contextmanager
    def _errors(self, action: str, path: str = "") -> Iterator[None]:
        """Anything raised inside leaves as a TransportError naming the operation.

        Inside an operation whose deadline passed, whatever broke is the timeout.
        """
        try:
            yield
        except TransportError:
            raise
        except Exception as err:
            raise self._fault(action, path, err) from err

    def _fault(self, action: str, path: str, err: BaseException) -> TransportError:
        running = self._running
        expired = running is not None and running.expired
        code, is_permanent, reason = _classify(DeadlineExceeded(running.seconds) if expired else err)
        target = f"{path} on {self.where}" if path else self.where
        return TransportError(f"SFTP {action} {target}: {reason}", permanent=is_permanent, code=code)

    @contextmanager
    def _operation(self, action: str, path: str = "") -> Iterator[paramiko.SFTPClient]:
        """One operation on this handle's channel, within operation_timeout of wall-clock time."""
        with self._errors(action, path):
            sftp = self._client(action, path)
            try:
                with deadline(self.settings.operation_timeout, self._cutter(sftp.get_channel)) as self._running:
                    yield sftp
            finally:
                self._running = None

    def _cutter(self, channel: Callable[[], paramiko.Channel | None]) -> Callable[[], None]:
        """The cut of a deadline on ``channel()``; binds this connection, not whatever ``self`` holds later."""
        ssh, sock = self._ssh, self._sock
        assert ssh is not None and sock is not None
        grace = min(_PROBE_GRACE, self.settings.operation_timeout)
        return lambda: _abandon(channel(), ssh, sock, grace)

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        s = self.settings
        try:
            with self.step("TCP connect") as st, self._errors("connect to"):
                self._sock = socket.create_connection((s.host, s.port or 22), timeout=s.connect_timeout)
                # Without it Nagle holds one channel's small packets for another's ACK: measured
                # 1.42x -> 1.93x for 2 channels over a 4 ms link, and a 5x faster login (bench/README.md).
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                st.detail = self.where
            with self.step("Host key") as st:
                key = self._handshake()
                strict = "strict key exchange" if self._ssh and self._ssh.agreed_on_strict_kex else \
                    "no strict key exchange (the server predates it)"
                st.detail = f"{key.get_name()} {fingerprint(key.asbytes())}; {strict}"
            with self.step("Authentication") as st, self._errors("log in to"):
                st.detail = self._authenticate()
            with self.step("SFTP session"), self._errors("start the SFTP session on"):
                self._sftp = self._open_sftp()
        except BaseException:
            self.close()  # whatever was opened so far
            raise

    def _handshake(self) -> paramiko.PKey:
        s = self.settings
        pinned = [parse_public_key(line) for line in pinned_lines(s.host_key)]  # (type, blob); several in a rotation
        with self._errors("connect to"):
            ssh = self._ssh = paramiko.Transport(self._sock)
            ssh.banner_timeout = s.connect_timeout
            ssh.handshake_timeout = 2 * s.connect_timeout + 5  # backstop: our wait below ends first
            ssh.auth_timeout = ssh.channel_timeout = s.operation_timeout
            # Ask for the pinned key's type first, so a server with several host
            # keys presents the one we know; with nothing pinned, prefer Ed25519.
            options = ssh.get_security_options()
            wanted = [a for key_type, _ in pinned for a in _HOST_KEY_ALGORITHMS.get(key_type, (key_type,))]
            first = [a for a in dict.fromkeys(wanted or ["ssh-ed25519"]) if a in options.key_types]
            options.key_types = first + [a for a in options.key_types if a not in first]
            done = threading.Event()
            ssh.start_client(event=done)  # with an event, so we bound the wait ourselves
            if not done.wait(2 * s.connect_timeout):
                raise TimeoutError("key exchange")
            if not ssh.is_active():
                raise ssh.get_exception() or paramiko.SSHException("key exchange failed")
        self._refuse_terrapin(ssh)
        key = ssh.get_remote_server_key()
        name, got = key.get_name(), fingerprint(key.asbytes())
        facts = {"presented_key": f"{name} {key.get_base64()}", "presented_fingerprint": got}
        if not pinned:
            raise HostKeyError(
                f"{self.where} presented the host key {name} {got}, but no host key is pinned; "
                "check the fingerprint with the server's admin, then pin the key",
                code=ErrorCode.HOST_KEY_UNKNOWN, **facts,
            )  # fmt: skip
        if key.asbytes() not in {blob for _, blob in pinned}:
            expected = ", ".join(fingerprint(blob) for _, blob in pinned)
            named = ", ".join(f"{key_type} {fingerprint(blob)}" for key_type, blob in pinned)
            raise HostKeyError(
                f"the host key of {self.where} has CHANGED: expected {named}, the server "
                f"presented {name} {got}; pin the new key only if the server's admin confirms it",
                code=ErrorCode.HOST_KEY_CHANGED, expected_fingerprint=expected, **facts,
            )  # fmt: skip
        return key

    def _refuse_terrapin(self, ssh: paramiko.Transport) -> None:
        """Terrapin (CVE-2023-48795) cuts messages from the start of a session whose server does no strict key
        exchange, when the session runs a CBC cipher with an encrypt-then-MAC MAC: refused, before any secret."""
        if ssh.agreed_on_strict_kex:
            return
        for cipher, mac in ((ssh.local_cipher, ssh.local_mac), (ssh.remote_cipher, ssh.remote_mac)):
            if str(cipher).endswith("-cbc") and str(mac).endswith("-etm@openssh.com"):
                ssh.close()
                raise permanent(f"{self.where} negotiated {cipher} with {mac} without strict key exchange, which is "
                                "open to the Terrapin attack (CVE-2023-48795); the server needs an update "
                                "(OpenSSH 9.6, or a distribution's fix)", ErrorCode.CONFIG)

    def _authenticate(self) -> str:
        """Key first, then password; returns the method that worked."""
        s, ssh = self.settings, self._ssh
        assert ssh is not None
        key = load_private_key(s.private_key, s.private_key_passphrase) if s.private_key else None
        attempts = [(f"key {key.get_name()} {key.fingerprint}", ssh.auth_publickey, key)] if key else []
        attempts += [("password", ssh.auth_password, s.password)] if s.password else []
        if not attempts:
            raise permanent("no password or private key is set", ErrorCode.AUTH)
        refused: list[str] = []
        for label, method, secret in attempts:
            try:
                method(s.username, secret)
            except paramiko.AuthenticationException as err:
                # paramiko reports a timeout or a dropped connection as an auth failure too.
                if "timeout" in str(err).lower():
                    raise TimeoutError("login") from err
                if not ssh.is_active():
                    raise EOFError("connection closed during login") from err
                allowed = getattr(err, "allowed_types", None)
                refused.append(f"{label} (the server allows only {', '.join(allowed)})" if allowed else label)
            if ssh.is_authenticated():
                return label
        tried = " and the ".join(refused)
        raise permanent(f"{self.where} refused the login of user {s.username!r} with the {tried}", ErrorCode.AUTH)

    def _open_sftp(self) -> paramiko.SFTPClient:
        """A new SFTP channel, opened (subsystem and version exchange too) within operation_timeout."""
        ssh, timeout = self._ssh, self.settings.operation_timeout
        assert ssh is not None
        opened: list[paramiko.Channel] = []
        try:
            with deadline(timeout, self._cutter(lambda: opened[0] if opened else None)) as limit:
                try:
                    opened.append(ssh.open_session(timeout=timeout))
                except paramiko.SSHException as err:  # paramiko words its channel-open timeout only in the text
                    if "timeout" in str(err).lower():
                        raise TimeoutError("opening a channel") from err
                    raise
                if limit.expired:  # the cut came before there was a channel to close
                    raise DeadlineExceeded(timeout)
                chan = opened[0]
                chan.settimeout(2 * timeout + 5)  # backstop only: the deadline ends every wait first
                try:
                    chan.invoke_subsystem("sftp")  # waits without a limit of its own; the cut ends it
                except Exception as err:
                    if not limit.expired and ssh.is_active():  # the login worked but the server said no to SFTP
                        raise permanent(f"{self.where} refused the SFTP subsystem for user {self.settings.username!r} "
                                        "(is SFTP enabled for this account?)", ErrorCode.PERMISSION) from err
                    raise
                return paramiko.SFTPClient(chan)
        except BaseException:
            for chan in opened:
                if not chan.closed:  # after a cut, closing is already under way
                    _close_all(self._sock, chan)
            raise

    def close(self) -> None:
        for lane in self._pool:
            _close_all(lane._sock, lane._sftp)
            lane._sftp = lane._ssh = lane._sock = None
        self._pool = []
        things = (self._sftp, self._ssh, self._sock)
        self._sftp = self._ssh = self._sock = None
        _close_all(things[2], *things)

    def abort(self) -> None:
        _shut(self._sock)  # the lanes share this socket: every channel's wait ends

    def is_alive(self) -> bool:
        ssh, sftp = self._ssh, self._sftp
        return ssh is not None and sftp is not None and ssh.is_active() and not sftp.get_channel().closed

    def keep_alive(self) -> None:
        if self._ssh is not None:
            self._ssh.set_keepalive(_KEEPALIVE_SECONDS)  # paramiko's thread sends keepalive@openssh.com

    def _client(self, action: str, path: str) -> paramiko.SFTPClient:
        """This handle's SFTP client; fails at once when its channel or the connection is gone."""
        sftp, ssh = self._sftp, self._ssh
        if sftp is None or ssh is None:
            raise TransportError(f"the SFTP connection to {self.where} is not open", code=ErrorCode.NETWORK)
        if not ssh.is_active() or sftp.get_channel().closed:  # a closed channel fails at once, never waits
            what = "SFTP channel" if ssh.is_active() else "SSH connection"
            target = f"{path} on {self.where}" if path else self.where
            raise TransportError(f"SFTP {action} {target}: the {what} is closed (an earlier operation timed out, "
                                 "or the server closed it); the next connection retries", code=ErrorCode.NETWORK)
        return sftp

    # -- primitives: each one operation under one deadline ----------------------
    def list_dir(self, directory: str, *, limit: int | None = None) -> Listing:
        # Attributes come with the names (no stat per file); read as far as the limit, within one deadline.
        with self._operation("list", directory) as sftp, closing(sftp_listing.read_dir(sftp, directory)) as entries:
            kept, truncated = first_entries(entries, limit, name=lambda entry: entry.name)
        return Listing((entry.file for entry in kept if entry.file is not None), truncated=truncated)

    def stat(self, path: str) -> RemoteFile | None:
        try:
            with self._operation("stat", path) as sftp:
                return _remote_file(posixpath.basename(path), sftp.stat(path))
        except TransportError as err:
            if err.code == ErrorCode.NOT_FOUND:
                return None
            raise

    def read_file(self, path: str, *, max_bytes: int, size_hint: int | None = None) -> bytes:
        too_large = f"{path} on {self.where} is larger than {max_bytes} bytes"
        if size_hint is not None and 0 < size_hint <= min(max_bytes, _ONE_READ):
            # The listing gave the size (and readiness saw it unchanged): open, one READ, and a CLOSE that
            # is not waited for (the server answers requests of a channel in order): two round trips.
            with self._operation("read", path) as sftp:
                fh = sftp.open(path, "rb")
                try:
                    return fh.read(size_hint)
                finally:
                    _close_later(fh)
        with self._operation("read", path) as sftp, sftp.open(path, "rb") as fh:
            size = fh.stat().st_size
            if size is not None and size > max_bytes:
                raise permanent(too_large, ErrorCode.TOO_LARGE)
            if size:
                fh.prefetch(size)  # pipelined reads instead of one round trip per 32 KiB
            data = fh.read(max_bytes + 1)  # one byte more tells "exactly the cap" from "grew past it"
        if len(data) > max_bytes:
            raise permanent(too_large, ErrorCode.TOO_LARGE)
        return data

    def read_many(self, directory: str, files: list[RemoteFile], *, max_bytes: int) -> list[bytes | TransportError]:
        """Small files (one READ each, by the listed size) in two round trips for the whole batch."""
        small = [f for f in files if 0 < f.size <= min(max_bytes, _ONE_READ)]
        got: dict[str, bytes | OSError] = {}
        if len(small) > 1:
            with self._operation("read", directory) as sftp:
                read = sftp_pipeline.read_small(sftp, [(self.join(directory, f.name), f.size) for f in small])
            got = {f.name: data for f, data in zip(small, read, strict=True)
                   if isinstance(data, OSError) or len(data) == f.size}
        results: list[bytes | TransportError] = []
        for f in files:
            data = got.get(f.name)
            if isinstance(data, OSError):
                results.append(self._fault("read", self.join(directory, f.name), data))
            elif data is not None:
                results.append(data)
            else:  # large, alone, or shorter than listed: the one-file path
                results += super().read_many(directory, [f], max_bytes=max_bytes)
        return results

    def move_many(self, moves: list[tuple[str, str]]) -> list[str | TransportError]:
        """Renames in one round trip for the whole batch where the server refuses to overwrite (OpenSSH).

        A rename refused (name taken, file gone, no permission) goes the one-file way, which tells
        which it was and takes the next free name.
        """
        if len(moves) < 2 or not self._rename_refuses_overwrite():
            return super().move_many(moves)
        pairs = [(src, self.join(dest_dir, posixpath.basename(src))) for src, dest_dir in moves]
        with self._operation("rename", moves[0][0]) as sftp:
            refused = sftp_pipeline.rename_all(sftp, pairs)
        results: list[str | TransportError] = []
        for move, (_src, target), err in zip(moves, pairs, refused, strict=True):
            results += [target] if err is None else super().move_many([move])
        return results

    def put_atomic(self, directory: str, name: str, data: bytes) -> str:
        """Temp file, size checked, renamed without overwriting: in three round trips instead of six.

        The size is checked with an FSTAT on the open handle, answered after
        the pipelined writes.  The check for an existing final file before
        uploading is skipped on OpenSSH, whose rename refuses to replace a file
        (link + unlink): the rename itself is the atomic check there.
        """
        if not self._rename_refuses_overwrite():
            return super().put_atomic(directory, name, data)
        final = self.join(directory, name)
        temp = final + self.settings.temp_suffix
        try:
            with self._operation("write", temp) as sftp:
                fh = sftp.open(temp, "wb")
                try:
                    fh.set_pipelined(True)
                    fh.write(data)
                    size = fh.stat().st_size  # answered after every write was: the bytes are all there
                finally:
                    _close_later(fh)  # the RENAME behind it is answered after the CLOSE is done
            if size != len(data):
                raise TransportError(f"upload of {temp} incomplete: expected {len(data)} bytes, server has {size}",
                                     code=ErrorCode.SIZE_MISMATCH)
            self.rename_no_overwrite(temp, final)
        except TransportError:
            self.remove_stale_temp(final)
            raise
        return final

    def put_batch(self, directory: str, items: list[tuple[str, bytes]]) -> list[str | TransportError]:
        """``put_atomic`` of a batch in three round trips where the server's rename refuses to overwrite.

        Every temp file is opened, then written with its size checked by an FSTAT and closed, then
        renamed: the guarantees of ``put_atomic``, pipelined.  A file that fails keeps its own outcome
        (and leaves no temp file); a refused rename goes the one-file way, which tells why.
        """
        small = [(name, data) for name, data in items if len(data) <= _BATCH_FILE_BYTES]
        if len(small) < 2 or len({name for name, _data in small}) < len(small) or not self._rename_refuses_overwrite():
            return super().put_batch(directory, items)
        finals = {name: self.join(directory, name) for name, _data in small}
        temp = {name: final + self.settings.temp_suffix for name, final in finals.items()}
        with self._operation("write", directory) as sftp:
            sizes = sftp_pipeline.write_files(sftp, [(temp[name], data) for name, data in small])
            written = [name for (name, data), size in zip(small, sizes, strict=True) if size == len(data)]
            refused = sftp_pipeline.rename_all(sftp, [(temp[name], finals[name]) for name in written])
        outcome: dict[str, str | OSError | TransportError] = {name: finals[name] for name in written}
        outcome.update({name: err for name, err in zip(written, refused, strict=True) if err is not None})
        for (name, data), size in zip(small, sizes, strict=True):
            if isinstance(size, OSError):
                outcome[name] = self._fault("write", temp[name], size)
            elif size != len(data):
                outcome[name] = TransportError(f"upload of {temp[name]} incomplete: expected {len(data)} bytes, "
                                               f"server has {size}", code=ErrorCode.SIZE_MISMATCH)
        results: list[str | TransportError] = []
        for name, data in items:
            got = outcome.get(name)
            if got is None:  # too large to batch
                results += super().put_batch(directory, [(name, data)])
                continue
            if isinstance(got, OSError):  # the rename was refused: the one-file way says why (EXISTS...)
                try:
                    self.rename_no_overwrite(temp[name], finals[name])
                    got = finals[name]
                except TransportError as err:
                    got = err
            if isinstance(got, TransportError):
                self.remove_stale_temp(finals[name])
            results.append(got)
        return results

    def _rename_refuses_overwrite(self) -> bool:
        ssh = self._ssh
        return ssh is not None and "OpenSSH" in (ssh.remote_version or "")

    def write_file(self, path: str, data: bytes) -> None:
        with self._operation("write", path) as sftp, sftp.open(path, "wb") as fh:
            fh.set_pipelined(True)  # don't wait for each chunk's acknowledgement; close() checks them all
            fh.write(data)

    def rename(self, src: str, dst: str) -> None:
        with self._operation(f"rename {src} to", dst) as sftp:
            sftp.rename(src, dst)  # SSH_FXP_RENAME: OpenSSH refuses an existing target

    def rename_no_overwrite(self, src: str, dst: str) -> None:
        # The server's refusal is the atomic check; stat afterwards only tells why it refused.
        try:
            self.rename(src, dst)
        except TransportError as err:
            if err.code in (ErrorCode.TIMEOUT, ErrorCode.NETWORK):  # the channel is gone: a stat would only fail too
                raise
            if self.stat(dst) is not None:
                raise permanent(f"{dst} already exists on {self.where}", ErrorCode.EXISTS) from err
            raise

    def remove(self, path: str) -> None:
        with self._operation("remove", path) as sftp:
            sftp.remove(path)

    def makedirs(self, path: str) -> None:
        parts = path.split("/")
        with self._operation("create directory", path) as sftp:  # one deadline for all levels
            with suppress(OSError):
                mode = sftp.stat(path).st_mode  # usually there already: one request instead of one per level
                if mode is not None and stat_mode.S_ISDIR(mode):
                    return
            for i, part in enumerate(parts):
                current = "/".join(parts[: i + 1])
                if not part:
                    continue
                with self._errors("create directory", current):
                    try:
                        sftp.mkdir(current)
                    except OSError as err:  # fine if it is (or meanwhile became) a directory
                        try:
                            mode = sftp.stat(current).st_mode
                        except OSError:
                            raise err from None
                        if mode is not None and not stat_mode.S_ISDIR(mode):
                            raise permanent(
                                f"{current} on {self.where} exists and is not a directory", ErrorCode.EXISTS
                            ) from err

    # -- lanes: one SFTP channel per thread ----------------------------------
    def open_lanes(self, count: int) -> list[Transport]:
        """This transport plus up to ``count - 1`` SFTP channels on the same SSH connection.

        Each thread needs its own SFTPClient (one client shared by threads hangs).
        """
        lanes: list[Transport] = [self]
        if self._sftp is None:
            return lanes
        # Channels kept from an earlier run of this connection are reused (opening one costs round trips).
        self._pool = [lane for lane in self._pool if lane._sftp is not None and not lane._sftp.get_channel().closed]
        while len(self._pool) < count - 1:
            lane = SFTPTransport(self.settings)
            lane._ssh, lane._sock = self._ssh, self._sock  # shared: a lane's deadline may have to cut the connection
            try:
                lane._sftp = self._open_sftp()
            except (TransportError, paramiko.SSHException, OSError, EOFError):
                break  # fewer channels is slower, not wrong
            self._pool.append(lane)
        return lanes + self._pool[: count - 1]

    def close_lanes(self, lanes: list[Transport]) -> None:
        """The lanes stay open for the next run; ``close()`` closes them with the connection."""
        return None


def offered_algorithms() -> dict[str, list[str]]:
    """What a connection offers the server, in order of preference (docs/setup-guide.md lists it)."""
    kex = list(paramiko.Transport._preferred_kex) + ["kex-strict-c-v00@openssh.com"]
    return {"kex": kex, "ciphers": list(paramiko.Transport._preferred_ciphers),
            "macs": list(paramiko.Transport._preferred_macs), "host keys": list(paramiko.Transport._preferred_keys)}


def _remote_file(name: str, attrs: paramiko.SFTPAttributes) -> RemoteFile:
    return RemoteFile(name, attrs.st_size or 0, None if attrs.st_mtime is None else float(attrs.st_mtime))


def _close_later(fh: paramiko.SFTPFile) -> None:
    """Send CLOSE without waiting for its answer (paramiko's own close for files it collects).

    An SFTP server handles a channel's requests in order, so the next request
    (a RENAME of the file just written, the next OPEN) runs after the close.
    """
    fh._close(async_=True)
