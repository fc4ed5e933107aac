"""ERP connections: the change form (write-only secrets), test and pin pages, and where each one stands."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from orderflow.scoping import OrganizationScopedAdmin

from .. import admin_views
from ..forms import ERPConnectionForm
from ..models import ERPConnection, ERPExport
from ..services.connection_test import test_connection
from ..services.documents import preview_export
from ..services.lifecycle import AWAITING_ANSWER
from .common import actor

SECRET_POST_FIELDS = ("password", "private_key", "private_key_passphrase")
CREDENTIALS = ("password", "clear_password", "private_key", "clear_private_key", "private_key_passphrase",
               "clear_private_key_passphrase")


@admin.register(ERPConnection)
class ERPConnectionAdmin(OrganizationScopedAdmin):
    form = ERPConnectionForm
    list_display = ("name", "organization", "transport", "endpoint", "state", "last_poll_at", "last_poll_ok",
                    "last_poll_message")
    list_filter = ("is_active", "transport", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "host", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("mapping_preview", "last_poll_at", "last_poll_ok", "last_poll_message", "next_poll_at",
                       "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("organization", "name", "is_active", "transport")}),
        ("Server", {"fields": ("host", "port", "username", "host_key", "connect_timeout_seconds",
                               "operation_timeout_seconds")}),
        ("Credentials (write-only)", {"fields": CREDENTIALS}),
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

    def get_fieldsets(self, request: HttpRequest, obj: ERPConnection | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            # Without change permission: no secret field at all, only whether one is stored.
            return [(name, {**opts, "fields": ("credentials",)}) if opts["fields"] == CREDENTIALS
                    else (name, opts) for name, opts in fieldsets]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ERPConnection | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "credentials")

    @method_decorator(sensitive_post_parameters(*SECRET_POST_FIELDS))
    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url, extra_context)

    def has_test_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.test_connection")

    @admin.action(description="Test connection (writes and deletes a probe file)", permissions=["test"])
    def run_connection_test(self, request: HttpRequest, queryset: QuerySet[ERPConnection]) -> None:
        for conn in queryset:
            result = test_connection(connection=conn, actor=actor(request))
            url = reverse("admin:connectors_erpconnection_test", args=[conn.pk])
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, format_html('{}: {} <a href="{}">See the steps</a>', conn, result.summary,
                                                   url), level)

    def save_model(self, request: HttpRequest, obj: ERPConnection, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        cleared = getattr(obj, "secrets_cleared", [])
        if cleared:
            names = ", ".join(n.replace("_", " ") for n in cleared)
            self.message_user(request, f"The stored {names} belonged to the server, user or host key you changed "
                                       "and were cleared: type them again for the new one.", messages.WARNING)

    def _saved(self, request: HttpRequest, obj: ERPConnection) -> None:
        # A save never touches the network; the test is one click away.
        url = reverse("admin:connectors_erpconnection_test", args=[obj.pk])
        self.message_user(request, format_html('Saved. <a href="{}" class="of-test-link">Test the connection</a> '
                                               "to check that it works.", url), messages.INFO)

    def response_add(self, request: HttpRequest, obj: ERPConnection, post_url_continue: str | None = None):
        self._saved(request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: ERPConnection) -> HttpResponse:
        self._saved(request, obj)
        return super().response_change(request, obj)

    @admin.display(description="Credentials")
    def credentials(self, obj: ERPConnection) -> str:
        stored = [label for name, label in (("password", "a password"), ("private_key", "a private key"),
                                            ("private_key_passphrase", "a passphrase")) if getattr(obj, name)]
        return "Stored: " + ", ".join(stored) if stored else "None stored."

    @admin.display(description="Preview of the file")
    def mapping_preview(self, obj: ERPConnection) -> str:
        if not obj.pk:
            return "Save the connection to see a preview."
        preview = preview_export(connection=obj)
        return format_html('<pre class="of-preview" style="max-height:30em;overflow:auto">{}</pre>', preview)

    @admin.display(description="State", ordering="is_active")
    def state(self, obj: ERPConnection) -> str:
        """Active; draining (inactive, still polled while answers are awaited); or inactive."""
        awaiting = 0 if obj.is_active else ERPExport.objects.filter(connection=obj, status__in=AWAITING_ANSWER).count()
        state = "active" if obj.is_active else "draining" if awaiting else "inactive"
        label = f"draining ({awaiting} awaiting an answer)" if awaiting else state
        return format_html('<span class="of-state of-state-{}">{}</span>', state, label)

    @admin.display(description="Endpoint")
    def endpoint(self, obj: ERPConnection) -> str:
        if obj.transport == "local":
            return obj.export_path
        return f"{obj.username}@{obj.host}:{obj.effective_port}"
