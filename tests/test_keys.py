"""FIELD_ENCRYPTION_KEYS: `manage.py rotate_secret_keys` and the system check that validates the keys."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import connection as db
from django.test import override_settings

from connectors.checks import check_field_encryption_keys
from connectors.models import ERPConnection
from orderflow.devenv import TEST_FIELD_ENCRYPTION_KEY

PASSWORD = "rotate-Me-Pw1"
PASSPHRASE = "rotate me passphrase"


def new_key() -> str:
    return Fernet.generate_key().decode()


def raw(pk: int) -> tuple[str, str, str]:
    with db.cursor() as cur:
        cur.execute("SELECT password, private_key, private_key_passphrase FROM connectors_erpconnection WHERE id = %s",
                    [pk])
        return cur.fetchone()


def rotate_cmd(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_secret_keys", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def old_key() -> str:
    return new_key()


@pytest.fixture
def conns(make_connection, old_key: str) -> list[ERPConnection]:
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        return [
            make_connection(name="A", transport="sftp", host="h", username="u", password=PASSWORD,
                            private_key_passphrase=PASSPHRASE, is_active=False),
            make_connection(name="B", transport="ftp", host="h", username="u", password=PASSWORD + "-b"),
        ]


def test_rotation_moves_every_secret_to_the_first_key_and_is_idempotent(conns, old_key: str) -> None:
    primary = new_key()
    with override_settings(FIELD_ENCRYPTION_KEYS=[primary, old_key]):
        out, err = rotate_cmd()
        assert "3 secret(s) re-encrypted" in out and "0 already" in out and err == ""
        for secret in (PASSWORD, PASSPHRASE, "u"):
            assert secret not in out
        assert rotate_cmd()[0].startswith("0 secret(s) re-encrypted with the first key; 3 already on it.")
    # The old key can go now: everything reads with the new key alone.
    with override_settings(FIELD_ENCRYPTION_KEYS=[primary]):
        a = ERPConnection.objects.get(name="A").transport_settings()
        b = ERPConnection.objects.get(name="B").transport_settings()
        assert (a.password, a.private_key_passphrase, a.private_key, b.password) == (
            PASSWORD, PASSPHRASE, "", PASSWORD + "-b")


def test_dry_run_counts_and_writes_nothing(conns, old_key: str) -> None:
    before = [raw(c.pk) for c in conns]
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key(), old_key]):
        out, _err = rotate_cmd("--dry-run")
    assert "3 secret(s) would be re-encrypted" in out
    assert [raw(c.pk) for c in conns] == before


def test_rows_no_key_reads_are_listed_without_values_and_fail_the_command(conns, old_key: str,
                                                                          make_connection) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key()]):
        readable = make_connection(name="C", transport="sftp", host="h", username="u", password="fine-Pw1",
                                   is_active=False)
        token_before = raw(readable.pk)[0]
        out, err = io.StringIO(), io.StringIO()
        with pytest.raises(CommandError) as caught:
            call_command("rotate_secret_keys", stdout=out, stderr=err)
    listing = err.getvalue()
    a, b = conns
    assert f"connectors.ERPConnection id={a.pk} 'A' field password" in listing
    assert f"connectors.ERPConnection id={a.pk} 'A' field private_key_passphrase" in listing
    assert f"connectors.ERPConnection id={b.pk} 'B' field password" in listing
    assert "3 stored secret(s) cannot be decrypted" in str(caught.value)
    assert "0 secret(s) re-encrypted with the first key; 1 already on it." in out.getvalue()
    everything = listing + out.getvalue() + str(caught.value)
    for secret in (PASSWORD, PASSPHRASE, "fine-Pw1", *raw(a.pk), token_before):
        assert not secret or secret not in everything
    assert raw(readable.pk)[0] == token_before


def test_the_command_exits_non_zero_when_rows_are_unreadable(transactional_db: None, conns) -> None:
    import subprocess
    import sys

    from tests.integration import BASE_DIR, child_env

    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key()]):
        env = child_env(BASE_DIR / "var")
    result = subprocess.run([sys.executable, "manage.py", "rotate_secret_keys"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot be decrypted" in result.stderr and PASSWORD not in result.stdout + result.stderr


# --- the system check ---

def ids(messages: list) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize("keys, expected", [
    ([], ["orderflow.E002"]),
    (["not-a-key"], ["orderflow.E003"]),
    (["A" * 44], ["orderflow.E003"]),  # 44 characters, but decodes to 33 bytes, not 32
    ("a-string", ["orderflow.E001"]),
])
def test_check_refuses_bad_key_lists(keys, expected) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=keys):
        messages = check_field_encryption_keys()
    assert ids(messages) == expected
    for message in messages:
        text = f"{message.msg} {message.hint}"
        assert "not-a-key" not in text and "A" * 20 not in text


def test_check_names_a_bad_key_by_position_only() -> None:
    good = new_key()
    with override_settings(FIELD_ENCRYPTION_KEYS=[good, "short", good]):
        messages = check_field_encryption_keys()
    assert ids(messages) == ["orderflow.E003", "orderflow.W001"]
    assert "entry #2" in messages[0].msg
    assert all("short" not in f"{m.msg} {m.hint}" and good not in f"{m.msg} {m.hint}" for m in messages)


def test_check_refuses_the_builtin_key_outside_test() -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key(), TEST_FIELD_ENCRYPTION_KEY], ORDERFLOW_ENV="production"):
        messages = check_field_encryption_keys()
    assert ids(messages) == ["orderflow.E004"] and "entry #2" in messages[0].msg
    assert isinstance(messages[0], Error) and TEST_FIELD_ENCRYPTION_KEY not in messages[0].msg
    with override_settings(FIELD_ENCRYPTION_KEYS=[TEST_FIELD_ENCRYPTION_KEY], ORDERFLOW_ENV="test"):
        assert check_field_encryption_keys() == []


def test_manage_check_runs_the_key_check() -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=["nope"]):
        with pytest.raises(SystemCheckError, match="orderflow.E003"):
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    call_command("check", stdout=io.StringIO())  # the test settings pass
