"""Admin URLs are no oracle: no lookup on a secret field, no regular expression, on any admin page.

Django's admin lets a change list be filtered by any lookup on the model's own fields from the URL
(``?password__regex=…``).  On a secret column that is an oracle: a view-only user rebuilt a stored secret's
ciphertext one character at a time from "rows" or "no rows", and a catastrophic pattern froze a web process.
``install()`` wraps ``ModelAdmin.lookup_allowed`` for every ModelAdmin (ours, Django's own User admin,
django-q2's): a lookup whose path touches a secret field, or that uses a regular expression, is refused, and
the admin answers 400 (``DisallowedModelAdminLookup``).

A field is secret when it says so (``secret = True``, as the connector's encrypted fields do) or is the user
model's password hash.  The core knows no model of the connector: the marker is on the field.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import ModelAdmin
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Field, Model
from django.db.models.constants import LOOKUP_SEP

#: Lookups never taken from a URL: the database runs whatever pattern it is given, however long that takes.
REFUSED = frozenset({"regex", "iregex"})


def is_secret(field: Any) -> bool:
    if getattr(field, "secret", False):
        return True
    return getattr(field, "name", "") == "password" and getattr(field, "model", None) is get_user_model()


def refused(model: type[Model], lookup: str) -> bool:
    """Whether ``lookup`` (a filter path from ``model``) touches a secret field or asks for a regex."""
    parts = lookup.split(LOOKUP_SEP)
    if REFUSED & set(parts):
        return True
    current: type[Model] | None = model
    for part in parts:
        if current is None:
            break
        try:
            field: Field = current._meta.get_field(part)
        except FieldDoesNotExist:
            break  # a transform or a lookup name: the path's fields end here
        if is_secret(field):
            return True
        current = field.related_model if field.is_relation else None
    return False


def install() -> None:
    """Wrap every ModelAdmin's ``lookup_allowed`` (once)."""
    original = ModelAdmin.lookup_allowed
    if getattr(original, "refuses_secrets", False):
        return

    def lookup_allowed(self: ModelAdmin, lookup: str, value: Any, request: Any = None) -> bool:
        if refused(self.model, lookup):
            return False
        return original(self, lookup, value, request)

    lookup_allowed.refuses_secrets = True  # type: ignore[attr-defined]
    ModelAdmin.lookup_allowed = lookup_allowed  # type: ignore[method-assign]
