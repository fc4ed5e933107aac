"""Admin for ERP connections, exports and events (thin: actions call services)."""

from __future__ import annotations

from functools import partial

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from orderflow.admin import status_badge

from . import admin_views
from .forms import ERPConnectionForm
from .models import ConnectorEvent, ERPConnection, ERPExport
from .services import pushing
from .services.connection_test import test_connection
from .services.documents import preview_export


class ReadOnlyAdminMixin:
    """Rows written by the pipeline: staff look, the pipeline writes."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ExportInline(ReadOnlyAdminMixin, admin.TabularInline):
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
        return status_badge(obj.status, obj.get_status_display())


@admin.register(ERPConnection)
class ERPConnectionAdmin(admin.ModelAdmin):
    form = ERPConnectionForm
    list_display = ("name", "organization", "transport", "endpoint", "is_active", "last_poll_at", "last_poll_ok",
                    "last_poll_message")
    list_filter = ("is_active", "transport", "organization")
    search_fields = ("name", "host", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("mapping_preview", "last_poll_at", "last_poll_ok", "last_poll_message", "next_poll_at",
                       "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("organization", "name", "is_active", "transport")}),
        ("Server", {"fields": ("host", "port", "username", "host_key", "connect_timeout_seconds",
                               "operation_timeout_seconds")}),
        ("Credentials (write-only)", {"fields": ("password", "clear_password", "private_key", "clear_private_key",
                                                 "private_key_passphrase", "clear_private_key_passphrase")}),
        ("Directories", {"fields": ("export_path", "ack_path", "processed_path", "failed_path", "temp_suffix")}),
        ("Delivery and polling", {"fields": ("max_attempts", "upload_channels", "poll_interval_seconds",
                                             "min_ack_age_seconds", "mapping", "mapping_preview")}),
        ("Last poll", {"fields": ("last_poll_at", "last_poll_ok", "last_poll_message", "next_poll_at",
                                  "created_at", "updated_at")}),
    )

    actions = ["run_connection_test"]

    def get_urls(self) -> list:
        def wrap(view):  # type: ignore[no-untyped-def]
            return self.admin_site.admin_view(partial(view, self))

        return [
            path("<path:object_id>/test/", wrap(admin_views.test_connection_view),
                 name="connectors_erpconnection_test"),
            path("<path:object_id>/pin-host-key/", wrap(admin_views.pin_host_key_view),
                 name="connectors_erpconnection_pin_host_key"),
            *super().get_urls(),
        ]

    def _report_test(self, request: HttpRequest, conn: ERPConnection) -> None:
        result = test_connection(connection=conn)
        url = reverse("admin:connectors_erpconnection_test", args=[conn.pk])
        if result.ok:
            self.message_user(request, f"{conn}: {result.summary}", messages.SUCCESS)
        else:
            self.message_user(request, format_html('{}: {} <a href="{}">See the steps</a>', conn, result.summary,
                                                   url), messages.ERROR)

    @admin.action(description="Test connection", permissions=["view"])
    def run_connection_test(self, request: HttpRequest, queryset: QuerySet[ERPConnection]) -> None:
        for conn in queryset:
            self._report_test(request, conn)

    def response_add(self, request: HttpRequest, obj: ERPConnection, post_url_continue: str | None = None):
        self._report_test(request, obj)  # an admin wants to know at once whether the settings work
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: ERPConnection) -> HttpResponse:
        self._report_test(request, obj)
        return super().response_change(request, obj)

    @admin.display(description="Preview of the file")
    def mapping_preview(self, obj: ERPConnection) -> str:
        if not obj.pk:
            return "Save the connection to see a preview."
        preview = preview_export(connection=obj)
        return format_html('<pre class="of-preview" style="max-height:30em;overflow:auto">{}</pre>', preview)

    @admin.display(description="Endpoint")
    def endpoint(self, obj: ERPConnection) -> str:
        if obj.transport == "local":
            return obj.export_path
        return f"{obj.username}@{obj.host}:{obj.effective_port}"


class AckOverdueFilter(admin.SimpleListFilter):
    title = "ack"
    parameter_name = "ack"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("overdue", f"Overdue (no ack after {settings.ACK_OVERDUE_AFTER_MINUTES} min)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> QuerySet[ERPExport]:
        if self.value() == "overdue":
            return queryset.ack_overdue()
        return queryset


@admin.register(ERPExport)
class ERPExportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("short_id", "draft", "connection", "status_display", "filename", "attempts", "next_attempt_at",
                    "sent_at", "acked_at", "erp_order_number")
    list_filter = ("status", AckOverdueFilter, "connection", "connection__organization")
    search_fields = ("filename", "draft__order_number", "erp_order_number")
    list_select_related = ("draft__organization", "connection")
    date_hierarchy = "created_at"
    actions = ["retry_delivery"]

    def get_readonly_fields(self, request: HttpRequest, obj: ERPExport | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        overdue = ERPExport.objects.ack_overdue().count()
        if overdue:
            extra_context = {**(extra_context or {}),
                             "subtitle": f"{overdue} sent export(s) have no ack after "
                                         f"{settings.ACK_OVERDUE_AFTER_MINUTES} minutes"}
        return super().changelist_view(request, extra_context)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.change_erpexport")

    @admin.action(description="Retry delivery", permissions=["retry"])
    def retry_delivery(self, request: HttpRequest, queryset: QuerySet[ERPExport]) -> None:
        counts = pushing.retry_exports(exports=queryset)
        self.message_user(request, f"{counts.done} export(s) queued for delivery again.", messages.SUCCESS)
        if counts.skipped:
            self.message_user(
                request,
                f"{counts.skipped} export(s) skipped: only pending exports, or failed ones that never reached "
                "the dropzone, can be retried (push the draft again for a new export).",
                messages.WARNING,
            )

    @admin.display(description="Export id", ordering="id")
    def short_id(self, obj: ERPExport) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: ERPExport) -> str:
        badge = status_badge(obj.status, obj.get_status_display())
        if obj.is_ack_overdue:
            return format_html('{} <span class="of-overdue" style="color:#dc3545">ack overdue</span>', badge)
        return badge


@admin.register(ConnectorEvent)
class ConnectorEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "level", "kind", "connection", "export", "message")
    list_filter = ("level", "kind", "connection", "connection__organization")
    search_fields = ("message", "export__filename")
    list_select_related = ("connection", "export")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: ConnectorEvent | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]
