"""Admin for organizations and draft orders (thin).  Knows nothing of connectors: the connector app
extends this admin with the push action and the exports (connectors/admin/drafts.py)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html

from .models import DraftOrder, DraftOrderLine, Organization
from .scoping import OrganizationScopedAdmin, ScopedInlineMixin

# Colours staff can read at a glance.
DRAFT_COLOURS = {
    "NEW": "#6c757d",
    "APPROVED": "#0d6efd",
    "PUSHED": "#6f42c1",
    "CONFIRMED": "#198754",
    "PUSH_FAILED": "#dc3545",
    "REJECTED": "#fd7e14",
}


def status_badge(value: str, label: str, colours: dict[str, str] = DRAFT_COLOURS) -> str:
    colour = colours.get(value, "#6c757d")
    return format_html(
        '<span class="of-status of-status-{}" style="color:#fff;background:{};padding:2px 6px;'
        'border-radius:4px;white-space:nowrap">{}</span>',
        value.lower(), colour, label,
    )


class SuperusersOnlyUserAdmin(UserAdmin):
    """Users are not an organization's rows: they belong to every organization (or none), so only superusers see
    and change them.  This also closes the members autocomplete, which asks the user admin for view permission."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), SuperusersOnlyUserAdmin)


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    list_display = ("name", "slug")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members",)

    def get_readonly_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        # Who belongs to an organization, and its slug (which names its local dropzone directory and its export
        # files), are the superusers' decision: members can neither widen their reach nor move their ground.
        return () if request.user.is_superuser else ("slug", "members")

    def get_prepopulated_fields(self, request: HttpRequest, obj: Organization | None = None) -> dict:
        return super().get_prepopulated_fields(request, obj) if request.user.is_superuser else {}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser


STALE_EDIT = ("This draft was pushed to the ERP while you edited it and can no longer be changed; your changes "
              "were not saved. The page shows what the ERP gets.")


def is_locked(draft: DraftOrder | None) -> bool:
    """Approved, pushed or confirmed drafts are what the ERP has (or is getting): not editable."""
    return draft is not None and draft.status not in DraftOrder.PUSHABLE


class DraftOrderForm(forms.ModelForm):
    class Meta:
        model = DraftOrder
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # Someone may have pushed it while this form was open: its contents are then what the ERP gets.  A new
        # draft has its id already (a UUID default), so ``_state.adding``, not the id, says it is not saved yet.
        adding = self.instance._state.adding
        if not adding and not DraftOrder.objects.filter(pk=self.instance.pk, status__in=DraftOrder.PUSHABLE).exists():
            raise forms.ValidationError(STALE_EDIT)
        return cleaned


class DraftOrderLineInline(ScopedInlineMixin, admin.TabularInline):
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


#: Written by the connector's lifecycle only; an edit form must never write back what it was loaded with.
LIFECYCLE_FIELDS = ("status", "erp_order_id")


@admin.register(DraftOrder)
class DraftOrderAdmin(OrganizationScopedAdmin):
    form = DraftOrderForm
    list_display = (
        "order_number", "organization", "customer_name", "order_date", "status_display", "erp_order_id", "updated_at"
    )
    list_filter = ("status", ("organization", admin.RelatedOnlyFieldListFilter), "order_date")
    search_fields = ("order_number", "customer_name", "customer_number", "erp_order_id")
    date_hierarchy = "order_date"
    list_select_related = ("organization",)
    readonly_fields = ("status_display", "erp_order_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("organization", "order_number", "order_date", "requested_delivery_date", "currency",
                           "status_display", "erp_order_id")}),
        ("Customer", {"fields": ("customer_number", "customer_name")}),
        ("Ship to", {"fields": ("ship_to_name", "ship_to_street", "ship_to_postal_code", "ship_to_city",
                                "ship_to_country")}),
        (None, {"fields": ("notes", "created_at", "updated_at")}),
    )
    inlines = [DraftOrderLineInline]

    def get_readonly_fields(self, request: HttpRequest, obj: DraftOrder | None = None) -> tuple[str, ...]:
        if is_locked(obj):
            return tuple(f.name for f in DraftOrder._meta.fields if f.editable and f.name != "id") + (
                "status_display", "erp_order_id", "created_at", "updated_at")
        return self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: DraftOrder | None = None) -> bool:
        # What the ERP has (or is getting) is shown, not edited: Django's view-only page, with "Close".
        return not is_locked(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: DraftOrder | None = None) -> bool:
        return not is_locked(obj) and super().has_delete_permission(request, obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        # An edit form saved after the draft was pushed: say so on the draft's (now read-only) page rather than
        # answer 403 as for a page the user may not change at all.
        if request.method == "POST" and self.has_change_permission(request):
            draft = self.get_object(request, object_id)
            if is_locked(draft):
                self.message_user(request, STALE_EDIT, messages.ERROR)
                return HttpResponseRedirect(request.path)
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: DraftOrder, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.save()
            return
        fields = [f.name for f in DraftOrder._meta.concrete_fields
                  if f.editable and not f.primary_key and f.name not in LIFECYCLE_FIELDS]
        obj.save(update_fields=[*fields, "updated_at"])

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: DraftOrder) -> str:
        return status_badge(obj.status, obj.get_status_display())
