"""Validation of the order domain and the connection constraints."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from connectors.models import ERPConnection
from orderflow.models import DraftOrderLine


def messages(err: ValidationError) -> dict[str, list[str]]:
    return err.message_dict


def test_valid_draft_passes_full_clean(make_draft) -> None:
    draft = make_draft()
    draft.full_clean()
    for line in draft.lines.all():
        line.full_clean()


@pytest.mark.parametrize("currency", ["eur", "EU", "E1R"])
def test_bad_currency_is_rejected_with_a_clear_message(make_draft, currency: str) -> None:
    draft = make_draft(currency=currency)
    with pytest.raises(ValidationError) as err:
        draft.full_clean()
    assert "three-letter ISO 4217 currency code" in " ".join(messages(err.value)["currency"])


def test_delivery_before_order_date_is_rejected(make_draft) -> None:
    import datetime as dt

    draft = make_draft(requested_delivery_date=dt.date(2026, 11, 1))
    with pytest.raises(ValidationError) as err:
        draft.full_clean()
    assert "cannot be before the order date" in messages(err.value)["requested_delivery_date"][0]


def test_bad_country_code_is_rejected(make_draft) -> None:
    draft = make_draft(ship_to_country="de")
    with pytest.raises(ValidationError) as err:
        draft.full_clean()
    assert "country code" in messages(err.value)["ship_to_country"][0]


@pytest.mark.parametrize("quantity", [Decimal("0"), Decimal("-1")])
def test_non_positive_quantity_is_rejected(make_draft, quantity: Decimal) -> None:
    line = make_draft().lines.get()
    line.quantity = quantity
    with pytest.raises(ValidationError) as err:
        line.full_clean()
    assert messages(err.value)["quantity"] == ["Quantity must be greater than zero."]
    # The database refuses it too, whatever code path writes it.
    with pytest.raises(IntegrityError), transaction.atomic():
        line.save()


def test_negative_price_is_rejected(make_draft) -> None:
    line = make_draft().lines.get()
    line.unit_price = Decimal("-0.01")
    with pytest.raises(ValidationError) as err:
        line.full_clean()
    assert messages(err.value)["unit_price"] == ["Unit price cannot be negative."]


def test_line_numbers_are_unique_per_draft(make_draft) -> None:
    draft = make_draft()
    with pytest.raises(IntegrityError), transaction.atomic():
        DraftOrderLine.objects.create(draft=draft, line_number=1, sku="X", quantity=1)


def test_one_active_connection_per_organization(make_connection) -> None:
    make_connection(name="first")
    make_connection(name="inactive", is_active=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_connection(name="second")
    assert ERPConnection.objects.filter(is_active=True).count() == 1


def test_one_active_connection_message_in_validation(make_connection) -> None:
    make_connection(name="first")
    other = ERPConnection(organization=ERPConnection.objects.get().organization,
                          name="second", transport="local", is_active=True)
    with pytest.raises(ValidationError) as err:
        other.full_clean()
    assert "already has an active ERP connection" in str(err.value)


def test_remote_connection_needs_host_and_user(org) -> None:
    conn = ERPConnection(organization=org, name="x", transport="sftp")
    with pytest.raises(ValidationError) as err:
        conn.full_clean()
    assert set(messages(err.value)) >= {"host", "username"}


def test_paths_with_dotdot_are_rejected(org) -> None:
    conn = ERPConnection(organization=org, name="x", transport="local", export_path="/data/../etc")
    with pytest.raises(ValidationError) as err:
        conn.full_clean()
    assert "'..'" in messages(err.value)["export_path"][0]


def test_a_local_connection_stays_inside_the_operators_root(org) -> None:
    conn = ERPConnection(organization=org, name="x", transport="local", host="../elsewhere", export_path="/inbound")
    with pytest.raises(ValidationError) as err:
        conn.full_clean()
    assert "LOCAL_DROPZONE_ROOT" in messages(err.value)["host"][0]
    conn.host, conn.export_path = "acme", "../../etc"
    with pytest.raises(ValidationError) as err:
        conn.full_clean()
    assert "'..'" in messages(err.value)["export_path"][0]
    conn.export_path = "inbound"  # relative or absolute: both inside the root
    conn.full_clean()
