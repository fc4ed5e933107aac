"""Admin for organizations and draft orders (thin: actions call services)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from .models import DraftOrder, DraftOrderLine, Organization

# Colours staff can read at a glance; shared with the connectors admin.
STATUS_COLOURS = {
    "NEW": "#6c757d",
    "APPROVED": "#0d6efd",
    "PENDING": "#0d6efd",
    "PUSHED": "#6f42c1",
    "SENT": "#6f42c1",
    "CONFIRMED": "#198754",
    "ACKED": "#198754",
    "PUSH_FAILED": "#dc3545",
    "FAILED": "#dc3545",
    "REJECTED": "#fd7e14",
}


def status_badge(value: str, label: str) -> str:
    colour = STATUS_COLOURS.get(value, "#6c757d")
    return format_html(
        '<span class="of-status of-status-{}" style="color:#fff;background:{};padding:2px 6px;'
        'border-radius:4px;white-space:nowrap">{}</span>',
        value.lower(), colour, label,
    )


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


def is_locked(draft: DraftOrder | None) -> bool:
    """Approved, pushed or confirmed drafts are what the ERP has (or is getting): not editable."""
    return draft is not None and draft.status not in DraftOrder.PUSHABLE


class DraftOrderLineInline(admin.TabularInline):
    model = DraftOrderLine
    extra = 0
    min_num = 1
    fields = ("line_number", "sku", "description", "quantity", "unit", "unit_price")

    def has_add_permission(self, request: HttpRequest, obj: DraftOrder | None = None) -> bool:
        return not is_locked(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: DraftOrder | None = None) -> bool:
        return not is_locked(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: DraftOrder | None = None) -> bool:
        return not is_locked(obj) and super().has_delete_permission(request, obj)


@admin.register(DraftOrder)
class DraftOrderAdmin(admin.ModelAdmin):
    list_display = (
        "order_number", "organization", "customer_name", "order_date", "status_display", "erp_order_id", "updated_at"
    )
    list_filter = ("status", "organization", "order_date")
    search_fields = ("order_number", "customer_name", "customer_number", "erp_order_id", "exports__filename")
    date_hierarchy = "order_date"
    list_select_related = ("organization",)
    readonly_fields = ("status", "erp_order_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("organization", "order_number", "order_date", "requested_delivery_date", "currency",
                           "status", "erp_order_id")}),
        ("Customer", {"fields": ("customer_number", "customer_name")}),
        ("Ship to", {"fields": ("ship_to_name", "ship_to_street", "ship_to_postal_code", "ship_to_city",
                                "ship_to_country")}),
        (None, {"fields": ("notes", "created_at", "updated_at")}),
    )
    inlines = [DraftOrderLineInline]
    actions = ["push_to_erp"]

    def get_readonly_fields(self, request: HttpRequest, obj: DraftOrder | None = None) -> tuple[str, ...]:
        if is_locked(obj):
            return tuple(f.name for f in DraftOrder._meta.fields if f.editable and f.name != "id") + (
                "status", "erp_order_id", "created_at", "updated_at")
        return self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: DraftOrder | None) -> list:
        # Imported here: the connectors app depends on orders, not the reverse.
        from connectors.admin import ExportInline

        return [DraftOrderLineInline, ExportInline] if obj else [DraftOrderLineInline]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        draft = self.get_object(request, object_id)
        can_push = bool(draft and not is_locked(draft) and self.has_change_permission(request, draft))
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_push": can_push})

    @admin.action(description="Push to ERP", permissions=["change"])
    def push_to_erp(self, request: HttpRequest, queryset: QuerySet[DraftOrder]) -> None:
        from connectors.services.pushing import push_drafts

        counts = push_drafts(drafts=queryset)
        self.message_user(request, f"{counts.done} draft(s) approved and queued for the ERP.", messages.SUCCESS)
        if counts.skipped:
            self.message_user(
                request,
                f"{counts.skipped} draft(s) skipped: only New, Push failed or Rejected drafts with lines "
                "can be pushed.",
                messages.WARNING,
            )

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: DraftOrder) -> str:
        return status_badge(obj.status, obj.get_status_display())
