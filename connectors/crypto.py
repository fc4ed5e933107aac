"""Secrets at rest: Fernet tokens keyed by FIELD_ENCRYPTION_KEYS.

The first key encrypts; every listed key decrypts.  Loading a row never
decrypts: an :class:`EncryptedTextField` puts a :class:`Sealed` value (the
ciphertext) on the instance, and only the code that hands a secret to a
transport calls :meth:`Sealed.reveal`.  So a row that the configured keys
cannot read fails where its secret is used, with :class:`SecretDecryptionError`
(a permanent TransportError, recorded like any other), and nowhere else (admin
lists, other organizations' deliveries).

On the instance a field holds one of:

* ``""`` -- nothing stored;
* :class:`Sealed` -- the stored ciphertext, written back unchanged on save;
* ``str`` -- a new plaintext (typed in the admin, set in code), encrypted with
  the first key when the row is saved.

Serialization (``dumpdata``) writes the ciphertext; ``loaddata`` keeps a Fernet
token as it is (no second encryption) and encrypts anything else as plaintext.

Key rotation: put a new key first in FIELD_ENCRYPTION_KEYS (keep the old ones
after it), restart every process, then run ``manage.py rotate_secret_keys``; it re-encrypts
every stored secret with the first key and lists the rows no key can read.
Once it reports nothing left on an old key, that key can be dropped.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver

from .transports.base import ErrorCode, TransportError

KEY_HELP = (
    "32 url-safe base64-encoded bytes; make one with "
    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
)


class SecretDecryptionError(TransportError):
    """A stored secret cannot be read with the configured keys (the message never contains a secret).

    It is a permanent :class:`TransportError` (code ``config``): the services that catch transport faults
    record it on that connection's exports, polls and tests, like any fault that needs an operator.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True, code=ErrorCode.CONFIG)


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEYS
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: secrets cannot be stored.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError):
        # Never echo the key, nor chain the underlying error into the traceback.
        raise ImproperlyConfigured(
            f"FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key ({KEY_HELP})."
        ) from None


@lru_cache(maxsize=1)
def _primary() -> Fernet:
    _fernet()  # validates the keys first, with the message that names none of them
    return Fernet(settings.FIELD_ENCRYPTION_KEYS[0])


@receiver(setting_changed)
def _reset_keys(*, setting: str, **_: object) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _fernet.cache_clear()
        _primary.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as err:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted: none of the keys in FIELD_ENCRYPTION_KEYS matches it "
            "(the key it was encrypted with was removed or replaced). Restore that key, or enter the secret again."
        ) from err


def is_current(token: str) -> bool:
    """True when ``token`` is encrypted with the first (current) key."""
    try:
        _primary().decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def rotate(token: str) -> str:
    """``token`` re-encrypted with the first key; :class:`SecretDecryptionError` if no key reads it."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError) as err:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS."
        ) from err


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def looks_like_token(value: str) -> bool:
    """Whether ``value`` has the shape of a Fernet token (version 0x80, whole blocks); no key needed."""
    if not value.startswith("gAAAA") or not _TOKEN_CHARS.fullmatch(value):
        return False
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError):
        return False
    # version (1) + timestamp (8) + IV (16) + ciphertext (n * 16, n >= 1) + HMAC (32)
    return raw[0] == 0x80 and len(raw) >= 73 and (len(raw) - 57) % 16 == 0


class Sealed:
    """A stored secret, still encrypted: safe to load, copy, compare, log and render.

    ``str()`` and ``repr()`` never show the secret (nor the token); it is truthy
    when a secret is stored.  :meth:`reveal` decrypts it.
    """

    __slots__ = ("token",)
    token: str

    def __init__(self, token: str) -> None:
        object.__setattr__(self, "token", token)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Sealed is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Sealed is immutable")

    def reveal(self) -> str:
        """The plaintext; :class:`SecretDecryptionError` (naming no secret) when no configured key reads it."""
        return decrypt(self.token)

    def __bool__(self) -> bool:
        return bool(self.token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.token == self.token

    def __hash__(self) -> int:
        return hash((Sealed, self.token))

    def __repr__(self) -> str:
        return "<Sealed secret>"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Sealed], tuple[str]]:
        return (Sealed, (self.token,))


def reveal(value: Sealed | str | None) -> str:
    """The plaintext of a field value: a :class:`Sealed` is decrypted, a (new, unsaved) str is returned as is."""
    if isinstance(value, Sealed):
        return value.reveal()
    return value or ""


class EncryptedTextField(models.TextField):
    """A text column that only ever holds a Fernet token (or ``""``); see the module docstring.

    Loading gives a :class:`Sealed` value, never the plaintext; assigning a str
    means "new plaintext", encrypted on save.
    """

    #: No admin URL may filter by it (orderflow/admin_lookups.py): its ciphertext is no one's to probe.
    secret = True

    def from_db_value(self, value: str | None, expression: object, connection: object) -> Sealed | str | None:
        if not value:
            return value
        return Sealed(value)

    def to_python(self, value: Any) -> Sealed | str | None:
        # Called by the deserializers (loaddata): a token is what dumpdata wrote, kept as it is.
        # Never raises: Django would put the offending value (maybe a plaintext secret) into its error.
        if value is None or isinstance(value, Sealed):
            return value
        value = str(value)
        return Sealed(value) if looks_like_token(value) else value

    def clean(self, value: Any, model_instance: models.Model | None) -> Any:
        # Model.full_clean(): a str here is a plaintext someone typed; do not let to_python()
        # mistake it for a token.
        self.validate(value, model_instance)
        self.run_validators(value)
        return value

    def pre_save(self, model_instance: models.Model, add: bool) -> Sealed | str:
        # Encrypt a new plaintext once and keep only the ciphertext on the instance afterwards.
        value = getattr(model_instance, self.attname)
        if isinstance(value, str) and value:
            value = Sealed(encrypt(value))
            setattr(model_instance, self.attname, value)
        return value

    def get_prep_value(self, value: Any) -> str | None:
        value = models.Field.get_prep_value(self, value)  # resolves lazy strings; not TextField's to_python()
        if value is None or value == "":
            return value
        if isinstance(value, Sealed):
            return value.token
        if isinstance(value, str):
            return encrypt(value)
        raise TypeError(f"{type(self).__name__} stores a str or a Sealed value, not {type(value).__name__}.")

    def value_to_string(self, obj: models.Model) -> str:
        # dumpdata: the ciphertext, never the plaintext.
        return self.get_prep_value(self.value_from_object(obj)) or ""

    def formfield(self, **kwargs: Any) -> Any:
        from django import forms

        # A form that does not choose its own widget must still never render a stored secret.
        return super().formfield(**{"widget": forms.PasswordInput(render_value=False), **kwargs})


# -- a secret typed into a form that came back with an error ------------------------------------

KEPT_TTL_SECONDS = 3600


def keep_typed(value: str, *, purpose: str) -> str:
    """Ciphertext of a typed secret for a hidden form field, so a form error does not lose it.

    Bound to ``purpose`` (which form and field) and valid for an hour; the page never holds the plaintext.
    """
    return _fernet().encrypt(f"{purpose}\0{value}".encode()).decode("ascii")


def typed_back(token: str, *, purpose: str) -> str | None:
    """The secret kept by :func:`keep_typed` for this purpose, or None (expired, forged, other purpose)."""
    try:
        text = _fernet().decrypt(token.encode("ascii"), ttl=KEPT_TTL_SECONDS).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        return None
    bound, _, value = text.partition("\0")
    return value if bound == purpose and value else None
