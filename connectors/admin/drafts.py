"""The order admin, extended by the connector: Push to ERP (action and button) and the draft's exports."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from orderflow.admin import DraftOrderAdmin, is_locked, status_badge
from orderflow.models import DraftOrder
from orderflow.scoping import ScopedInlineMixin

from ..models import ConnectorEvent, ERPExport, ack_overdue_cutoff
from ..outbound import pushing
from .common import ReadOnlyAdminMixin, actor, export_badge, render_timeline


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

    def get_queryset(self, request: HttpRequest) -> QuerySet[DraftOrder]:
        # The current export's facts, for the list: the ERP's reason, and whether its ack is overdue.
        current = ERPExport.objects.filter(draft=OuterRef("pk")).order_by("-created_at")
        return super().get_queryset(request).annotate(
            current_status=Subquery(current.values("status")[:1]),
            current_error=Subquery(current.values("last_error")[:1]),
            current_sent_at=Subquery(current.values("sent_at")[:1]),
        )

    def get_fieldsets(self, request: HttpRequest, obj: DraftOrder | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))
        return [*fieldsets, ("ERP: exports and events", {"fields": ("erp_timeline",)})] if obj else fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: DraftOrder | None = None) -> tuple[str, ...]:
        return (*super().get_readonly_fields(request, obj), "erp_timeline")

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: DraftOrder) -> str:
        badge = status_badge(obj.status, obj.get_status_display())
        status = getattr(obj, "current_status", None)
        sent_at = getattr(obj, "current_sent_at", None)
        if status in (ERPExport.Status.REJECTED, ERPExport.Status.FAILED):  # the reason, where staff look
            return format_html('{}<br><span class="of-reason">{}</span>', badge,
                               Truncator(obj.current_error).chars(160))
        if status == ERPExport.Status.SENT and sent_at and sent_at < ack_overdue_cutoff():
            return format_html('{} <span class="of-overdue" style="color:#dc3545">ack overdue</span>', badge)
        return badge

    @admin.display(description="Story")
    def erp_timeline(self, obj: DraftOrder) -> str:
        events = ConnectorEvent.objects.filter(export__draft=obj).order_by("created_at", "id")
        return render_timeline(events)

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
