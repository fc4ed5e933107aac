"""Issue 19, point 1: staff add draft orders with their lines in the admin, and an edit never overwrites a draft
that was pushed while the form was open."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from orderflow.models import DraftOrder, Organization

ADD_URL = reverse("admin:orderflow_draftorder_add")


def draft_form(org: Organization, **fields: Any) -> dict[str, str]:
    """What the add form posts: the draft's fields, two lines and the inline's management form."""
    data = {
        "organization": str(org.pk), "order_number": "PO-ADDED-1", "order_date": "2026-12-07",
        "requested_delivery_date": "2026-12-20", "currency": "EUR", "customer_number": "C-7",
        "customer_name": "Hansa Werkzeug", "ship_to_name": "", "ship_to_street": "", "ship_to_postal_code": "",
        "ship_to_city": "", "ship_to_country": "", "notes": "",
        "lines-TOTAL_FORMS": "2", "lines-INITIAL_FORMS": "0", "lines-MIN_NUM_FORMS": "1",
        "lines-MAX_NUM_FORMS": "1000",
    }
    for n, (sku, quantity) in enumerate((("BOLT-M8X40", "250"), ("NUT-M8", "500"))):
        data |= {f"lines-{n}-line_number": str(n + 1), f"lines-{n}-sku": sku, f"lines-{n}-description": "",
                 f"lines-{n}-quantity": quantity, f"lines-{n}-unit": "PCE", f"lines-{n}-unit_price": "0.12"}
    return data | {k: str(v) for k, v in fields.items()}


def assert_added(response, org: Organization) -> DraftOrder:
    errors = response.context and [str(e) for e in response.context.get("errors") or []]
    assert response.status_code == 302, errors
    draft = DraftOrder.objects.get(order_number="PO-ADDED-1")
    assert (draft.organization, draft.status, draft.customer_name) == (org, "NEW", "Hansa Werkzeug")
    assert [(line.line_number, line.sku) for line in draft.lines.all()] == [(1, "BOLT-M8X40"), (2, "NUT-M8")]
    return draft


def test_a_superuser_adds_a_draft_with_its_lines(admin_client: Client, org: Organization) -> None:
    assert admin_client.get(ADD_URL).status_code == 200
    assert_added(admin_client.post(ADD_URL, draft_form(org)), org)


@pytest.mark.django_db
def test_a_staff_member_adds_a_draft_for_their_organization(org: Organization) -> None:
    user = User.objects.create_user("clerk", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["add_draftorder", "view_draftorder", "change_draftorder", "add_draftorderline",
                      "view_draftorderline", "change_draftorderline"]))
    org.members.add(user)
    client = Client()
    client.force_login(user)
    assert_added(client.post(ADD_URL, draft_form(org)), org)


def test_an_edit_of_a_draft_pushed_meanwhile_is_refused_and_changes_nothing(
        admin_client: Client, org: Organization, make_draft) -> None:
    draft = make_draft(order_number="PO-OPEN", lines=0)
    url = reverse("admin:orderflow_draftorder_change", args=[draft.pk])
    assert admin_client.get(url).status_code == 200  # the form is open...
    DraftOrder.objects.filter(pk=draft.pk).update(status="APPROVED")  # ...and someone pushes the draft
    response = admin_client.post(url, draft_form(org, order_number="PO-EDITED"), follow=True)
    assert response.redirect_chain == [(url, 302)]  # back to the draft, now read-only, with the reason
    html = response.content.decode()
    assert "was pushed to the ERP while you edited it" in html and 'name="order_number"' not in html
    assert DraftOrder.objects.get(pk=draft.pk).order_number == "PO-OPEN"
