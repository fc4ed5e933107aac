"""Secrets at rest: Fernet tokens keyed by FIELD_ENCRYPTION_KEYS.

The first key encrypts; every listed key decrypts, so keys rotate by putting
a new key first and re-saving rows (``manage.py rotate_secrets`` is not needed:
any save re-encrypts with the first key).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver


class SecretDecryptionError(Exception):
    """A stored secret cannot be read with the configured keys."""


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEYS
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: secrets cannot be stored.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as err:
        # Never echo the key itself.
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes; make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
        ) from err


@receiver(setting_changed)
def _reset_keys(*, setting: str, **_: object) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as err:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted: FIELD_ENCRYPTION_KEYS no longer contains "
            "the key it was encrypted with."
        ) from err


class EncryptedTextField(models.TextField):
    """A text column whose value is stored as a Fernet token; empty stays empty.

    Python code sees plaintext; the database only ever holds ciphertext.
    """

    def from_db_value(self, value: str | None, expression: object, connection: object) -> str | None:
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value: object) -> str | None:
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
