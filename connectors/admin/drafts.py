"""The order admin, extended by the connector: Push to ERP (action and button) and the draft's exports."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from orderflow.admin import DraftOrderAdmin, is_locked
from orderflow.models import DraftOrder
from orderflow.scoping import ScopedInlineMixin

from ..models import ERPExport
from ..services import pushing
from .common import ReadOnlyAdminMixin, actor, export_badge


class ExportInline(ScopedInlineMixin, ReadOnlyAdminMixin, admin.TabularInline):
    model = ERPExport
    extra = 0
    fields = ("export_link", "status_display", "filename", "attempts", "sent_at", "acked_at", "last_error")
    readonly_fields = fields
    ordering = ("-created_at",)
    show_change_link = False

    @admin.display(description="Export")
    def export_link(self, obj: ERPExport) -> str:
        url = reverse("admin:connectors_erpexport_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, str(obj.pk)[:8])

    @admin.display(description="Status")
    def status_display(self, obj: ERPExport) -> str:
        return export_badge(obj.status, obj.get_status_display())


admin.site.unregister(DraftOrder)


@admin.register(DraftOrder)
class ConnectedDraftOrderAdmin(DraftOrderAdmin):
    change_form_template = "admin/connectors/draftorder/change_form.html"
    search_fields = (*DraftOrderAdmin.search_fields, "exports__filename")
    actions = ["push_to_erp"]

    def get_inlines(self, request: HttpRequest, obj: DraftOrder | None) -> list:
        return [*self.inlines, ExportInline] if obj else list(self.inlines)

    def has_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.push_draft")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        draft = self.get_object(request, object_id)
        can_push = bool(draft and not is_locked(draft) and self.has_push_permission(request))
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can_push": can_push})

    @admin.action(description="Push to ERP", permissions=["push"])
    def push_to_erp(self, request: HttpRequest, queryset: QuerySet[DraftOrder]) -> None:
        counts = pushing.push_drafts(drafts=queryset, actor=actor(request))
        self.message_user(request, f"{counts.done} draft(s) approved and queued for the ERP.", messages.SUCCESS)
        if counts.waiting:
            self.message_user(request, f"{counts.waiting} of them wait: their organization has no active ERP "
                                       "connection yet.", messages.WARNING)
        if counts.skipped:
            self.message_user(request, f"{counts.skipped} draft(s) skipped: only New, Push failed or Rejected "
                                       "drafts with lines can be pushed.", messages.WARNING)
