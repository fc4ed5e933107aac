"""Issue 9, findings 4 and 5: organization-scoped staff, view-only pages, side effects only on POST.

Two organizations with two staff users each, and a view-only user of the
first: a matrix over every admin change list, object page typed by hand,
action and connection page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from connectors.models import ConnectorEvent, ERPConnection, ERPExport
from orderflow.models import DraftOrder, Organization

STAFF_PERMS = [
    "view_draftorder", "change_draftorder", "add_draftorder", "view_draftorderline", "change_draftorderline",
    "add_draftorderline", "view_erpexport", "view_connectorevent", "view_erpconnection", "change_erpconnection",
    "add_erpconnection", "view_organization", "push_draft", "retry_export", "cancel_export", "record_answer",
    "test_connection", "pin_host_key",
]


@dataclass
class World:
    orgs: dict[str, Organization]
    drafts: dict[str, DraftOrder]
    exports: dict[str, ERPExport]
    connections: dict[str, ERPConnection]
    events: dict[str, ConnectorEvent]
    clients: dict[str, Client]


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(db, org, make_draft) -> World:
    orgs, drafts, exports, connections, events, clients = {"acme": org}, {}, {}, {}, {}, {}
    orgs["globex"] = Organization.objects.create(slug="globex", name="Globex Ltd")
    for slug in ("acme", "globex"):
        org = orgs[slug]
        conn = connections[slug] = ERPConnection.objects.create(
            organization=org, name=f"{slug} ERP", transport="local", is_active=True, export_path="/x",
            password=f"{slug}-secret-Pw")
        draft = drafts[slug] = make_draft(organization=org, order_number=f"PO-{slug.upper()}-1")
        exports[slug] = ERPExport.objects.create(draft=draft, connection=conn, status="SENT", sent_at=timezone.now(),
                                                 filename=f"{slug}-file.json")
        events[slug] = ConnectorEvent.objects.create(connection=conn, export=exports[slug], kind="delivered",
                                                     message=f"Delivered {slug}-file.json")
        for n in (1, 2):
            user = User.objects.create_user(f"{slug}{n}", password=None, is_staff=True)  # force_login: no slow hashing
            user.user_permissions.add(*Permission.objects.filter(codename__in=STAFF_PERMS))
            org.members.add(user)
            clients[f"{slug}{n}"] = login(user)
    viewer = User.objects.create_user("viewer", password=None, is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    orgs["acme"].members.add(viewer)
    clients["viewer"] = login(viewer)
    return World(orgs, drafts, exports, connections, events, clients)


CHANGELISTS = {
    "orderflow_draftorder": lambda w, s: w.drafts[s].order_number,
    "connectors_erpexport": lambda w, s: w.exports[s].filename,
    "connectors_connectorevent": lambda w, s: f"Delivered {s}-file.json",
    "connectors_erpconnection": lambda w, s: w.connections[s].name,
    "orderflow_organization": lambda w, s: w.orgs[s].name,
}
OBJECTS = {
    "orderflow_draftorder": lambda w, s: w.drafts[s].pk,
    "connectors_erpexport": lambda w, s: w.exports[s].pk,
    "connectors_connectorevent": lambda w, s: w.events[s].pk,
    "connectors_erpconnection": lambda w, s: w.connections[s].pk,
    "orderflow_organization": lambda w, s: w.orgs[s].pk,
}


@pytest.mark.parametrize("user", ["acme1", "acme2", "globex1", "globex2", "viewer"])
@pytest.mark.parametrize("page", sorted(CHANGELISTS))
def test_change_lists_and_typed_urls_show_only_the_users_organizations(world: World, user: str, page: str) -> None:
    own, other = ("acme", "globex") if user.startswith(("acme", "viewer")) else ("globex", "acme")
    client = world.clients[user]
    html = client.get(reverse(f"admin:{page}_changelist")).content.decode()
    assert CHANGELISTS[page](world, own) in html
    assert CHANGELISTS[page](world, other) not in html
    assert world.orgs[other].name not in html  # not even in a filter
    assert client.get(reverse(f"admin:{page}_change", args=[OBJECTS[page](world, own)])).status_code == 200
    response = client.get(reverse(f"admin:{page}_change", args=[OBJECTS[page](world, other)]), follow=True)
    assert CHANGELISTS[page](world, other) not in response.content.decode()  # redirected: "does not exist"


def test_search_never_finds_another_organizations_rows(world: World) -> None:
    client = world.clients["acme1"]
    url = reverse("admin:orderflow_draftorder_changelist")
    assert "0 draft orders" in client.get(url, {"q": "PO-GLOBEX"}).content.decode()
    assert "0 ERP exports" in client.get(reverse("admin:connectors_erpexport_changelist"),
                                         {"q": "globex-file"}).content.decode()


def test_form_choices_offer_only_the_users_organizations(world: World) -> None:
    for page in ("orderflow_draftorder", "connectors_erpconnection"):
        html = world.clients["acme1"].get(reverse(f"admin:{page}_add")).content.decode()
        assert world.orgs["acme"].name in html and "Globex Ltd" not in html


@pytest.mark.parametrize(("page", "action", "target", "extra"), [
    ("orderflow_draftorder", "push_to_erp", "drafts", {}),
    ("connectors_erpexport", "cancel_export", "exports", {"apply": "1", "reason": "x"}),
    ("connectors_erpexport", "record_rejection", "exports", {"apply": "1", "reason": "x"}),
    ("connectors_erpexport", "record_confirmation", "exports", {"apply": "1", "reason": "x",
                                                                "erp_order_number": "SO-1"}),
    ("connectors_erpexport", "retry_delivery", "exports", {}),
    ("connectors_erpconnection", "run_connection_test", "connections", {}),
])
def test_actions_never_reach_another_organizations_rows(world: World, page: str, action: str, target: str,
                                                        extra: dict) -> None:
    foreign = getattr(world, target)["globex"]
    before = ConnectorEvent.objects.count()
    world.clients["acme1"].post(reverse(f"admin:{page}_changelist"),
                                {"action": action, "_selected_action": [str(foreign.pk)], **extra}, follow=True)
    foreign.refresh_from_db()
    assert getattr(foreign, "status", "untouched") in ("NEW", "SENT", "untouched")
    assert ConnectorEvent.objects.count() == before  # nothing happened anywhere


def test_connection_pages_of_another_organization_are_not_found(world: World) -> None:
    client = world.clients["acme1"]
    foreign = world.connections["globex"].pk
    assert client.get(reverse("admin:connectors_erpconnection_test", args=[foreign])).status_code == 404
    assert client.post(reverse("admin:connectors_erpconnection_test", args=[foreign])).status_code == 404
    assert client.post(reverse("admin:connectors_erpconnection_pin_host_key", args=[foreign]),
                       {"event": world.events["globex"].pk}).status_code == 404


def test_the_task_queue_pages_are_for_superusers_only(world: World, admin_client: Client) -> None:
    for model in ("success", "failure", "schedule", "ormq"):
        assert world.clients["acme1"].get(reverse(f"admin:django_q_{model}_changelist")).status_code == 403
        assert admin_client.get(reverse(f"admin:django_q_{model}_changelist")).status_code == 200
    assert "django_q" not in world.clients["acme1"].get(reverse("admin:index")).content.decode()


def test_a_user_without_organizations_sees_nothing(world: World) -> None:
    loner = User.objects.create_user("loner", password=None, is_staff=True)
    loner.user_permissions.add(*Permission.objects.filter(codename__in=STAFF_PERMS))
    client = login(loner)
    for page, text in CHANGELISTS.items():
        html = client.get(reverse(f"admin:{page}_changelist")).content.decode()
        assert text(world, "acme") not in html and text(world, "globex") not in html


def test_members_cannot_change_who_belongs(world: World) -> None:
    url = reverse("admin:orderflow_organization_change", args=[world.orgs["acme"].pk])
    html = world.clients["acme1"].get(url).content.decode()
    assert 'name="members"' not in html
    assert world.clients["acme1"].get(reverse("admin:orderflow_organization_add")).status_code == 403


# -- view-only staff (finding 4) ------------------------------------------------------------


def test_a_view_only_user_sees_a_connection_without_any_secret(world: World) -> None:
    conn = world.connections["acme"]
    response = world.clients["viewer"].get(reverse("admin:connectors_erpconnection_change", args=[conn.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "acme-secret-Pw" not in html and 'name="password"' not in html and "gAAAA" not in html
    assert "Stored: a password" in html


def test_a_view_only_user_cannot_run_a_test_or_pin(world: World) -> None:
    client = world.clients["viewer"]
    conn = world.connections["acme"]
    url = reverse("admin:connectors_erpconnection_test", args=[conn.pk])
    html = client.get(url).content.decode()
    assert client.get(url).status_code == 200 and "of-run-test" not in html
    assert client.post(url).status_code == 403
    assert not ConnectorEvent.objects.filter(kind="connection_test").exists()
    assert client.post(reverse("admin:connectors_erpconnection_pin_host_key", args=[conn.pk]),
                       {"event": "1"}).status_code == 403


def test_a_link_from_another_site_cannot_run_a_test(world: World) -> None:
    """A GET (an <img> on a hostile page) runs nothing; a POST without the CSRF token is refused."""
    conn = world.connections["acme"]
    user = User.objects.get(username="acme1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    url = reverse("admin:connectors_erpconnection_test", args=[conn.pk])
    client.get(url)
    assert client.post(url).status_code == 403
    assert not ConnectorEvent.objects.filter(kind="connection_test").exists()
