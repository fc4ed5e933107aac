"""Exports: read-only rows, with the staff verbs as actions (retry, cancel, record an ERP answer)."""

from __future__ import annotations

from functools import partial

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from orderflow.scoping import OrganizationScopedAdmin

from .. import admin_views
from ..models import ERPExport
from ..services import overrides
from ..services.lifecycle import refusal
from .common import ReadOnlyAdminMixin, actor, export_badge, render_timeline


class AckOverdueFilter(admin.SimpleListFilter):
    title = "ack"
    parameter_name = "ack"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("overdue", f"Overdue (no ack after {settings.ACK_OVERDUE_AFTER_MINUTES} min)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> QuerySet[ERPExport]:
        if self.value() == "overdue":
            return queryset.ack_overdue()
        return queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000,
                             help_text="Recorded with your name in the export's timeline.")


class ConfirmationForm(ReasonForm):
    erp_order_number = forms.CharField(label="ERP order number", max_length=255)


class ExportOverrideActions:
    """Admin actions that ask for a reason on an intermediate page, then call one service."""

    def _ask(self, request: HttpRequest, queryset: QuerySet[ERPExport], form_class: type[ReasonForm],
             title: str, action: str) -> tuple[forms.Form | None, HttpResponse | None]:
        if "apply" in request.POST:
            form = form_class(request.POST)
            if form.is_valid():
                return form, None
        else:
            form = form_class()
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": title, "form": form, "exports": queryset, "action": action,
            "opts": ERPExport._meta, "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return None, TemplateResponse(request, "admin/connectors/erpexport/override.html", context)

    def _report(self, request: HttpRequest, counts: overrides.Counts, done: str) -> None:
        self.message_user(request, f"{counts.done} export(s) {done}.", messages.SUCCESS)  # type: ignore[attr-defined]
        for reason, n in counts.refused.items():
            self.message_user(request, f"{n} export(s) left alone: {reason}.", messages.WARNING)  # type: ignore[attr-defined]

    @admin.action(description="Retry delivery", permissions=["retry"])
    def retry_delivery(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> None:
        counts = overrides.retry_exports(exports=queryset, actor=actor(request))
        self._report(request, counts, "queued for delivery again")
        if counts.skipped:
            self.message_user(request, "Only a draft's current export that never reached the dropzone can be "  # type: ignore[attr-defined]
                                       "retried; push the draft again for a new export.", messages.INFO)

    @admin.action(description="Cancel export (asks why)", permissions=["cancel"])
    def cancel_export(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> HttpResponse | None:
        form, page = self._ask(request, queryset, ReasonForm, "Cancel undelivered exports", "cancel_export")
        if form is None:
            return page
        counts = overrides.cancel_exports(exports=queryset, actor=actor(request), reason=form.cleaned_data["reason"])
        self._report(request, counts, "cancelled; their drafts are New again")
        return None

    @admin.action(description="Record ERP confirmation given outside the dropzone (asks why)",
                  permissions=["record_answer"])
    def record_confirmation(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one export: each confirmation has its own ERP number.",  # type: ignore[attr-defined]
                              messages.ERROR)
            return None
        form, page = self._ask(request, queryset, ConfirmationForm, "Record the ERP's confirmation",
                               "record_confirmation")
        if form is None:
            return page
        return self._answer(request, queryset.get(), form, accepted=True)

    @admin.action(description="Record ERP rejection given outside the dropzone (asks why)",
                  permissions=["record_answer"])
    def record_rejection(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> HttpResponse | None:
        form, page = self._ask(request, queryset, ReasonForm, "Record the ERP's rejection", "record_rejection")
        if form is None:
            return page
        for export in queryset:
            self._answer(request, export, form, accepted=False)
        return None

    def _answer(self, request: HttpRequest, export: ERPExport, form: forms.Form, *, accepted: bool) -> None:
        try:
            result = overrides.record_answer(export=export, actor=actor(request), accepted=accepted,
                                             reason=form.cleaned_data["reason"],
                                             erp_order_number=form.cleaned_data.get("erp_order_number", ""))
        except overrides.OverrideError as err:
            self.message_user(request, str(err), messages.ERROR)  # type: ignore[attr-defined]
            return
        if result.ok:
            self.message_user(request, f"{export}: answer recorded.", messages.SUCCESS)  # type: ignore[attr-defined]
        else:
            self.message_user(request, f"{export}: not recorded: {refusal(result)}.", messages.WARNING)  # type: ignore[attr-defined]


@admin.register(ERPExport)
class ERPExportAdmin(ExportOverrideActions, ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = ("short_id", "draft", "connection", "status_display", "filename", "attempts", "next_attempt_at",
                    "sent_at", "acked_at", "erp_order_number")
    list_filter = ("status", AckOverdueFilter, ("connection", admin.RelatedOnlyFieldListFilter),
                   ("draft__organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("filename", "draft__order_number", "erp_order_number")
    list_select_related = ("draft__organization", "connection")
    date_hierarchy = "created_at"
    actions = ["retry_delivery", "cancel_export", "record_confirmation", "record_rejection"]

    fieldsets = (
        (None, {"fields": ("short_id", "draft", "connection", "status_display", "filename", "files",
                           "created_at", "updated_at")}),
        ("Delivery", {"fields": ("attempts", "next_attempt_at", "last_error", "sent_at", "payload_sha256",
                                 "payload_size")}),
        ("The ERP's answer", {"fields": ("acked_at", "erp_order_number", "errors")}),
        ("Timeline", {"fields": ("timeline",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ERPExport | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields] + ["short_id", "status_display", "files", "timeline"]

    def get_urls(self) -> list:
        def wrap(view):  # type: ignore[no-untyped-def]
            return self.admin_site.admin_view(partial(view, self))

        return [
            path("<path:object_id>/payload/", wrap(admin_views.payload_view), name="connectors_erpexport_payload"),
            path("<path:object_id>/answer/", wrap(admin_views.answer_view), name="connectors_erpexport_answer"),
            *super().get_urls(),
        ]

    @admin.display(description="Files")
    def files(self, obj: ERPExport) -> str:
        links = []
        if obj.payload_sha256:  # frozen (its bytes are not loaded for a list of rows)
            url = reverse("admin:connectors_erpexport_payload", args=[obj.pk])
            links.append(format_html('<a class="of-payload" href="{}">Download the file</a> '
                                     '(<a href="{}?inline=1">view</a>)', url, url))
        if obj.ack_body is not None:
            links.append(format_html('<a class="of-answer" href="{}">The ERP\'s answer</a>',
                                     reverse("admin:connectors_erpexport_answer", args=[obj.pk])))
        return format_html_join(" · ", "{}", ((link,) for link in links)) or "—"

    @admin.display(description="Events")
    def timeline(self, obj: ERPExport) -> str:
        return render_timeline(obj.events.order_by("created_at", "id"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        overdue = self.get_queryset(request).ack_overdue().count()
        if overdue:
            extra_context = {**(extra_context or {}),
                             "subtitle": f"{overdue} sent export(s) have no ack after "
                                         f"{settings.ACK_OVERDUE_AFTER_MINUTES} minutes"}
        return super().changelist_view(request, extra_context)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.retry_export")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.cancel_export")

    def has_record_answer_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.record_answer")

    @admin.display(description="Export id", ordering="id")
    def short_id(self, obj: ERPExport) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: ERPExport) -> str:
        badge = export_badge(obj.status, obj.get_status_display())
        if obj.is_ack_overdue:
            return format_html('{} <span class="of-overdue" style="color:#dc3545">ack overdue</span>', badge)
        return badge
