"""Issue 9, finding 1: a stored secret cannot be lured to another endpoint.

A staff user with change permission on connections points a connection at a
server they control and leaves the password empty ("keep stored"). A small
FTP listener of the test's own records every byte it receives: the stored
password must never arrive there, whatever they do next (save, test, or a
delivery run).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors.models import ERPConnection, ERPExport
from connectors.outbound import delivery
from tests.fixtures.dropzones import connection_from

PASSWORD = "s3cret-ERP-Pw-4711"


class RecordingFTP:
    """An FTP server that greets, says yes to USER and records everything anybody sends it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            conn.sendall(b"220 evil ftp\r\n")
            try:
                while line := conn.recv(4096):
                    self.received += line
                    reply = b"331 send it\r\n" if line.upper().startswith(b"USER") else b"530 nope\r\n"
                    conn.sendall(reply)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def evil() -> Iterator[RecordingFTP]:
    server = RecordingFTP()
    yield server
    server.close()


@pytest.fixture
def staff(org) -> Client:
    """A member of the organization who may change connections and test them, but is no superuser."""
    user = User.objects.create_user("mallory", password="pw-Mallory-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_erpconnection", "change_erpconnection", "test_connection"]))
    org.members.add(user)
    client = Client()
    client.force_login(user)
    return client


def form(conn: ERPConnection, **overrides: str) -> dict[str, str]:
    data = {
        "organization": str(conn.organization_id), "name": conn.name, "transport": conn.transport,
        "host": conn.host, "port": str(conn.port or ""), "username": conn.username, "host_key": conn.host_key,
        "password": "", "private_key": "", "private_key_passphrase": "",
        "export_path": conn.export_path, "ack_path": conn.ack_path, "processed_path": "", "failed_path": "",
        "temp_suffix": ".tmp", "min_ack_age_seconds": "0", "poll_interval_seconds": "60",
        "connect_timeout_seconds": "5", "operation_timeout_seconds": "5", "max_attempts": "8",
        "upload_channels": "2", "mapping": "{}", "is_active": "on",
    }
    data.update(overrides)
    return data


@pytest.fixture
def ftp_conn(org, ftp_settings, ftp_workdir) -> ERPConnection:
    return connection_from(replace(ftp_settings(), password=PASSWORD), org, export_path=ftp_workdir.remote,
                           ack_path=ftp_workdir.remote)


def test_switching_host_and_port_clears_the_kept_password(staff: Client, ftp_conn: ERPConnection,
                                                         evil: RecordingFTP) -> None:
    url = reverse("admin:connectors_erpconnection_change", args=[ftp_conn.pk])
    response = staff.post(url, form(ftp_conn, host="127.0.0.1", port=str(evil.port)), follow=True)
    html = response.content.decode()
    assert "were cleared: type them again" in html
    assert evil.connections == 0  # saving touched no network
    staff.post(reverse("admin:connectors_erpconnection_test", args=[ftp_conn.pk]))  # the test from its button
    assert evil.connections == 1
    assert PASSWORD.encode() not in bytes(evil.received)
    assert not ERPConnection.objects.get().password


def test_switching_to_ftp_with_the_same_host_clears_it_too(staff: Client, org, sftp_settings, sftp_dir,
                                                           evil: RecordingFTP) -> None:
    conn = connection_from(replace(sftp_settings(), password=PASSWORD), org, export_path=str(sftp_dir),
                           ack_path=str(sftp_dir))
    url = reverse("admin:connectors_erpconnection_change", args=[conn.pk])
    staff.post(url, form(conn, transport="ftp", port=str(evil.port), host_key=""))
    staff.post(reverse("admin:connectors_erpconnection_test", args=[conn.pk]))
    assert PASSWORD.encode() not in bytes(evil.received)


def test_a_replaced_host_key_clears_the_secrets_but_a_first_pin_keeps_them(org, sftp_settings, sftp_dir,
                                                                          sshd_server) -> None:
    from connectors.services.connection_test import pin_host_key

    unpinned = connection_from(sftp_settings(host_key=""), org, export_path=str(sftp_dir), ack_path=str(sftp_dir))
    assert unpinned.private_key
    pinned = pin_host_key(connection=unpinned, host_key=sshd_server.host_keys["ed25519"], user="alice")
    assert pinned.cleared == [] and ERPConnection.objects.get(pk=unpinned.pk).private_key  # the first pin completes
    pinned = pin_host_key(connection=unpinned, host_key=sshd_server.host_keys["ecdsa"], user="alice")
    assert "private_key" in pinned.cleared  # replacing a pinned key: another server, maybe
    assert not ERPConnection.objects.get(pk=unpinned.pk).private_key


def test_retyping_the_password_in_the_same_save_keeps_the_new_one(staff: Client, ftp_conn: ERPConnection,
                                                                  ftp_server) -> None:
    url = reverse("admin:connectors_erpconnection_change", args=[ftp_conn.pk])
    staff.post(url, form(ftp_conn, username=ftp_server.user, password=ftp_server.password, port=str(ftp_conn.port)))
    conn = ERPConnection.objects.get()
    assert conn.transport_settings().password == ftp_server.password


def test_a_change_that_bypasses_save_never_gets_the_secret(ftp_conn: ERPConnection, make_draft,
                                                          evil: RecordingFTP) -> None:
    """Code (or SQL) that moves the row without its save: the transport is refused the secret."""
    ERPConnection.objects.filter(pk=ftp_conn.pk).update(port=evil.port)
    ERPExport.objects.create(draft=make_draft(), connection=ftp_conn, next_attempt_at=timezone.now())
    report = delivery.deliver_due_exports(connection=ERPConnection.objects.get())
    assert report.failed and evil.connections == 0
    assert "saved for another server" in ERPExport.objects.get().last_error


def test_a_second_key_pasted_for_a_rotation_asks_for_the_secrets_again(org, sftp_settings, sftp_dir,
                                                                       sshd_server) -> None:
    """Issue 18: "only keys added" kept them, so a key pasted by anyone who could edit the form got them."""
    conn = connection_from(sftp_settings(), org, export_path=str(sftp_dir), ack_path=str(sftp_dir))
    conn.host_key = f"{sshd_server.host_keys['ed25519']}\n{sshd_server.host_keys['ecdsa']}"  # one more, none gone
    conn.save()
    assert not ERPConnection.objects.get(pk=conn.pk).private_key
