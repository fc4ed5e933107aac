"""System checks (``manage.py check``) for the keys that protect connection secrets.

Messages name a key by its position in FIELD_ENCRYPTION_KEYS, never by its value.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from orderflow.devenv import TEST_FIELD_ENCRYPTION_KEY

from .crypto import KEY_HELP


@register(Tags.security)
def check_field_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    keys = getattr(settings, "FIELD_ENCRYPTION_KEYS", None)
    if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
        return [Error("FIELD_ENCRYPTION_KEYS must be a list of Fernet keys.", id="orderflow.E001")]
    if not keys:
        return [Error("FIELD_ENCRYPTION_KEYS is empty: connection secrets can be neither stored nor read.",
                      hint="Set FIELD_ENCRYPTION_KEYS to one or more comma-separated Fernet keys.",
                      id="orderflow.E002")]
    messages: list[CheckMessage] = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            messages.append(Error(f"FIELD_ENCRYPTION_KEYS entry #{position} is not a Fernet key.",
                                  hint=KEY_HELP, id="orderflow.E003"))
            continue
        if key == TEST_FIELD_ENCRYPTION_KEY and getattr(settings, "ORDERFLOW_ENV", "") != "test":
            messages.append(Error(
                f"FIELD_ENCRYPTION_KEYS entry #{position} is the repository's built-in test key, which is public.",
                hint="Generate a key of your own; to move stored secrets onto it, put it first, keep the old key "
                     "after it, run `manage.py rotate_secret_keys`, then drop the old key.",
                id="orderflow.E004"))
    if len(set(keys)) != len(keys):
        messages.append(Warning("FIELD_ENCRYPTION_KEYS lists the same key more than once.", id="orderflow.W001"))
    return messages
