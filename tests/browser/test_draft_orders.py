"""Issue 19 in a real browser: staff add a draft order with its lines through the admin's add form."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from orderflow.models import DraftOrder, Organization

from .conftest import Operator
from .test_operator_flow import log_in, messages

pytestmark = pytest.mark.slow


def test_staff_add_a_draft_with_lines(page: Page, operator: Operator, org: Organization,
                                      screenshot: Callable[[str], Path], js_errors: list[str]) -> None:
    log_in(page, operator, screenshot)
    page.goto("/admin/orderflow/draftorder/")
    page.get_by_role("link", name="Add draft order").click()
    page.select_option("#id_organization", label=org.name)
    page.fill("#id_order_number", "PO-BROWSER-7")
    page.fill("#id_order_date", "2026-12-07")
    page.fill("#id_customer_number", "C-7")
    page.fill("#id_customer_name", "Hansa Werkzeug")
    page.fill("#id_lines-0-line_number", "1")
    page.fill("#id_lines-0-sku", "BOLT-M8X40")
    page.fill("#id_lines-0-quantity", "250")
    page.fill("#id_lines-0-unit_price", "0.12")
    page.locator(".add-row a", has_text="Add another Draft order line").click()  # the inline's own button
    page.fill("#id_lines-1-line_number", "2")
    page.fill("#id_lines-1-sku", "NUT-M8")
    page.fill("#id_lines-1-quantity", "500")
    screenshot("add-form")
    page.get_by_role("button", name="Save and continue editing").click()

    expect(page.locator(".errornote")).to_have_count(0)
    expect(messages(page)).to_contain_text("was added successfully")
    draft = DraftOrder.objects.get(order_number="PO-BROWSER-7")
    expect(page).to_have_url(f"/admin/orderflow/draftorder/{draft.pk}/change/")
    assert (draft.organization, draft.status) == (org, DraftOrder.Status.NEW)
    assert [(line.line_number, line.sku, str(line.quantity)) for line in draft.lines.all()] == [
        (1, "BOLT-M8X40", "250.000"), (2, "NUT-M8", "500.000")]
    expect(page.locator("#id_lines-1-sku")).to_have_value("NUT-M8")  # the saved lines, still editable
    screenshot("draft-added")
    assert js_errors == []
