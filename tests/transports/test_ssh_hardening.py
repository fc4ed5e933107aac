"""Issue 18, point 7: strict key exchange (the Terrapin countermeasure) with OpenSSH, and no connection open to
Terrapin (CVE-2023-48795) with a server that does not do it.

Terrapin lets a man in the middle drop messages at the start of the encrypted stream when the server does not do
strict key exchange (``kex-strict-s-v00@openssh.com``) and the session uses an encrypt-then-MAC MAC with a CBC
cipher (or ChaCha20-Poly1305, which paramiko does not offer).  paramiko asks for strict key exchange and accepts a
server without it; our transport then refuses only the combinations the attack works on.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.transports import TransportError, get_transport
from connectors.transports.sftp import offered_algorithms


def test_openssh_agrees_on_strict_key_exchange(sftp_settings) -> None:
    with get_transport(sftp_settings()) as transport:
        assert transport._ssh.agreed_on_strict_kex
        assert "strict key exchange" in transport.steps[1].detail


class OldServer:
    """An SSH server (paramiko's, on 127.0.0.1) without strict key exchange, with the algorithms it is given."""

    def __init__(self, ciphers: tuple[str, ...], macs: tuple[str, ...]) -> None:
        self.host_key = _host_key()
        self.ciphers, self.macs = ciphers, macs
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        server = paramiko.Transport(conn, strict_kex=False)
        server.add_server_key(self.host_key)
        options = server.get_security_options()
        options.ciphers, options.digests = self.ciphers, self.macs
        try:
            server.start_server(server=paramiko.ServerInterface())
            server.accept(5)
        except Exception:  # noqa: BLE001 - the client refusing is what the test wants
            pass
        finally:
            server.close()

    @property
    def pinned(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"


def _host_key() -> paramiko.PKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return paramiko.RSAKey.from_private_key(io.StringIO(pem))


@pytest.fixture
def old_server(request: pytest.FixtureRequest) -> Iterator[OldServer]:
    server = OldServer(*request.param)
    server.thread.start()
    yield server
    server.listener.close()
    server.thread.join(10)


@pytest.mark.parametrize("old_server", [(("aes128-cbc",), ("hmac-sha2-256-etm@openssh.com",))], indirect=True)
def test_a_server_without_strict_key_exchange_is_refused_where_terrapin_works(old_server: OldServer,
                                                                               sftp_settings) -> None:
    settings = replace(sftp_settings(), port=old_server.port, host_key=old_server.pinned)
    with pytest.raises(TransportError) as info:
        get_transport(settings).open()
    assert "Terrapin" in info.value.message and info.value.permanent


@pytest.mark.parametrize("old_server", [(("aes128-ctr",), ("hmac-sha2-256",))], indirect=True)
def test_a_server_without_strict_key_exchange_is_accepted_where_terrapin_does_not_work(old_server: OldServer,
                                                                                        sftp_settings) -> None:
    settings = replace(sftp_settings(), port=old_server.port, host_key=old_server.pinned, connect_timeout=3,
                       operation_timeout=3)
    with pytest.raises(TransportError) as info:  # it gets as far as the login, which this server refuses
        get_transport(settings).open()
    assert "Terrapin" not in info.value.message


def test_the_algorithms_offered_are_documented() -> None:
    offered = offered_algorithms()
    assert "kex-strict-c-v00@openssh.com" in offered["kex"]
    assert offered["ciphers"][0] == "aes128-ctr"
