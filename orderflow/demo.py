"""Demo data for `make run`: organization `demo` and a few drafts (the connector app adds its dropzone)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction

from .models import DraftOrder, DraftOrderLine, Organization

DEMO_DRAFTS = [
    ("PO-2026-0042", "C-1001", "Müller Maschinenbau", [("BOLT-M8X40", "Hex bolt M8x40", "250", "0.12")]),
    ("PO-2026-0043", "C-1002", "Schmidt Anlagenbau", [("NUT-M8", "Hex nut M8", "500", "0.04"),
                                                       ("WASHER-M8", "Washer M8", "500", "0.02")]),
    ("PO/2026/0044 (urgent)", "C-1003", "Fischer Logistik", [("PALLET-EU", "Euro pallet", "10", "12.50")]),
]


@transaction.atomic
def load_demo_orders() -> list[str]:
    """Create the demo rows that are missing; returns what was created. Safe to rerun."""
    created: list[str] = []
    org, made = Organization.objects.get_or_create(slug="demo", defaults={"name": "Demo Industrial GmbH"})
    if made:
        created.append(f"organization {org.slug}")
    for order_number, customer_number, customer_name, lines in DEMO_DRAFTS:
        if DraftOrder.objects.filter(organization=org, order_number=order_number).exists():
            continue
        draft = DraftOrder.objects.create(
            organization=org, order_number=order_number, order_date=dt.date.today(),
            requested_delivery_date=dt.date.today() + dt.timedelta(days=14), currency="EUR",
            customer_number=customer_number, customer_name=customer_name,
            ship_to_name=customer_name, ship_to_street="Hafenstr. 7", ship_to_postal_code="20457",
            ship_to_city="Hamburg", ship_to_country="DE",
        )
        for number, (sku, description, quantity, price) in enumerate(lines, start=1):
            DraftOrderLine.objects.create(
                draft=draft, line_number=number, sku=sku, description=description,
                quantity=Decimal(quantity), unit_price=Decimal(price),
            )
        created.append(f"draft {order_number}")
    return created
