"""From a draft row to the export file: the only bridge between models and payloads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone

from orderflow.models import DraftOrder, DraftOrderLine

from ..contract import payloads
from ..contract.mapping import MappingError, apply_mapping
from ..contract.payloads import PayloadError
from ..models import ERPConnection

_PREFETCHED = "_export_lines"


class LineRow(NamedTuple):
    """What a document needs of a line, read without a model instance per line."""

    line_number: int
    sku: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal | None


def prefetch_lines(drafts: Sequence[DraftOrder], *, draft_ids: QuerySet) -> None:
    """Read the lines of many drafts in one query, for building their files.

    Plain rows, not ``prefetch_related``: Django's builds a queryset per draft and a model per line,
    which cost a delivery more than the lines themselves.  ``draft_ids`` is a query of the same drafts'
    ids: it spares Django compiling an ``IN`` list of a few hundred ids (~5 ms).
    """
    by_draft: dict[UUID, list[LineRow]] = {draft.pk: [] for draft in drafts}
    for draft_id, *values in (DraftOrderLine.objects.filter(draft_id__in=draft_ids)
                              .values_list("draft_id", *LineRow._fields)):
        by_draft.setdefault(draft_id, []).append(LineRow(*values))
    for draft in drafts:
        setattr(draft, _PREFETCHED, by_draft[draft.pk])


def _lines(draft: DraftOrder) -> Iterable[LineRow | DraftOrderLine]:
    prefetched = getattr(draft, _PREFETCHED, None)
    return draft.lines.all() if prefetched is None else prefetched


def order_data(draft: DraftOrder) -> payloads.OrderData:
    ship_to = None
    if draft.has_ship_to:
        ship_to = payloads.ShipTo(
            name=draft.ship_to_name, street=draft.ship_to_street, postal_code=draft.ship_to_postal_code,
            city=draft.ship_to_city, country=draft.ship_to_country,
        )
    return payloads.OrderData(
        draft_id=draft.id,
        order_number=draft.order_number,
        order_date=draft.order_date,
        requested_delivery_date=draft.requested_delivery_date,
        currency=draft.currency,
        customer_number=draft.customer_number,
        customer_name=draft.customer_name,
        ship_to=ship_to,
        notes=draft.notes,
        lines=tuple(
            payloads.LineData(
                line_number=line.line_number, sku=line.sku, description=line.description or None,
                quantity=line.quantity, unit=line.unit, unit_price=line.unit_price,
            )
            for line in sorted(_lines(draft), key=lambda line: line.line_number)
        ),
    )


def build_export_file(
    *, draft: DraftOrder, export_id: UUID, generated_at: datetime, mapping: dict | None
) -> tuple[str, bytes]:
    """File name and bytes of one export; raises PayloadError/MappingError on bad data."""
    document = payloads.build_document(
        export_id=export_id, generated_at=generated_at, org_slug=draft.organization.slug,
        org_name=draft.organization.name, order=order_data(draft),
    )
    # The default document must satisfy the contract before a mapping reshapes it.
    payloads.validate_document(document)
    name = payloads.export_filename(
        generated_at=generated_at, org_slug=draft.organization.slug, order_number=draft.order_number,
        export_id=export_id,
    )
    return name, payloads.render(apply_mapping(document, mapping) if mapping else document)


def preview_export(*, connection: ERPConnection) -> str:
    """The file this connection would write for the organization's newest draft, or why it cannot."""
    draft = DraftOrder.objects.filter(organization_id=connection.organization_id, lines__isnull=False).first()
    if draft is None:
        return "No draft with lines in this organization yet: nothing to preview."
    try:
        name, data = build_export_file(draft=draft, export_id=uuid.UUID(int=0),
                                       generated_at=timezone.now().replace(microsecond=0),
                                       mapping=connection.mapping)
    except (PayloadError, MappingError) as err:
        return f"Draft {draft.order_number} cannot be exported: {err}"
    return f"{name}\n\n{data.decode('utf-8')}"
