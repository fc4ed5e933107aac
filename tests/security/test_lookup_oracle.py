"""Issue 18, finding 3: admin URLs are no oracle on secrets, and no regular expression reaches the database.

A view-only user rebuilt a stored secret's Fernet token with ``?password__regex=…`` in ~850 requests (and
learnt whether one was set, and its length); a catastrophic pattern froze a web process for over 30 s.  Every
registered ModelAdmin is walked: every secret-bearing field it can reach (its own, or through a relation), with
every kind of lookup, is refused with a 400, for a superuser too; a regex lookup on any field is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from connectors.models import ERPConnection
from orderflow.admin_lookups import is_secret

LOOKUPS = ["", "__exact", "__regex", "__iregex", "__startswith", "__contains", "__gt", "__isnull", "__in"]


def secret_paths(model: type[Model], depth: int = 2, prefix: str = "") -> Iterator[str]:
    """Lookup paths from ``model`` to every secret field it reaches through up to ``depth`` relations."""
    for field in model._meta.get_fields():
        path = f"{prefix}{field.name}"
        if getattr(field, "concrete", False) and is_secret(field):
            yield path
        elif field.is_relation and field.related_model is not None and depth > 0:
            yield from secret_paths(field.related_model, depth - 1, f"{path}__")


def registered_with_secrets() -> list[tuple[str, str]]:
    cases = []
    for model, _model_admin in admin.site._registry.items():
        meta = model._meta
        for path in sorted(set(secret_paths(model))):
            cases.append((f"admin:{meta.app_label}_{meta.model_name}_changelist", path))
    return cases


def test_the_walk_finds_the_secrets_it_must_guard() -> None:
    cases = registered_with_secrets()
    connection_changelist = "admin:connectors_erpconnection_changelist"
    assert (connection_changelist, "password") in cases and (connection_changelist, "private_key") in cases
    assert ("admin:connectors_erpexport_changelist", "connection__private_key_passphrase") in cases
    assert ("admin:auth_user_changelist", "password") in cases  # password hashes are secrets too


@pytest.mark.parametrize(("changelist", "path"), registered_with_secrets())
def test_no_lookup_on_a_secret_field_on_any_admin_page(admin_client: Client, make_connection, changelist: str,
                                                       path: str) -> None:
    make_connection(password="Sup3r-secret-Pw")
    url = reverse(changelist)
    for lookup in LOOKUPS:
        response = admin_client.get(url, {f"{path}{lookup}": "g"})
        assert response.status_code == 400, (changelist, f"{path}{lookup}", response.status_code)


@pytest.mark.django_db
def test_a_view_only_user_learns_nothing_from_the_filter(make_connection, org) -> None:
    """The reported attack: one request per guessed character, telling "rows" from "no rows"."""
    conn = make_connection(password="Sup3r-secret-Pw")
    token = ERPConnection.objects.get(pk=conn.pk).password.token
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    org.members.add(viewer)
    client = Client()
    client.force_login(viewer)
    url = reverse("admin:connectors_erpconnection_changelist")
    assert client.get(url).status_code == 200
    for guess in (f"^{token[:5]}", "^zzzz", "^([A-Za-z0-9_=-]+)+!"):  # right, wrong, catastrophic
        response = client.get(url, {"password__regex": guess})
        assert response.status_code == 400 and conn.name not in response.content.decode()


@pytest.mark.parametrize("lookup", ["name__regex", "name__iregex", "organization__name__regex"])
def test_no_regular_expression_from_an_admin_url(admin_client: Client, make_connection, lookup: str) -> None:
    make_connection()
    response = admin_client.get(reverse("admin:connectors_erpconnection_changelist"), {lookup: "^([a-z]+)+!"})
    assert response.status_code == 400


def test_ordinary_filters_still_work(admin_client: Client, make_connection) -> None:
    conn = make_connection()
    url = reverse("admin:connectors_erpconnection_changelist")
    response = admin_client.get(url, {"is_active__exact": "1", "transport__exact": "local"})
    assert response.status_code == 200 and conn.name in response.content.decode()


def test_no_admin_searches_sorts_or_filters_by_a_secret() -> None:
    for model, model_admin in admin.site._registry.items():
        secret = set(secret_paths(model))
        named = [name.lstrip("-=^@") for name in (*model_admin.search_fields, *(model_admin.ordering or ()))]
        filters = [f if isinstance(f, str) else f[0] for f in model_admin.list_filter if not isinstance(f, type)]
        assert not secret & {*named, *filters}, (model.__name__, secret & {*named, *filters})
