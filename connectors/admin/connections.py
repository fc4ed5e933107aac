"""ERP connections: the change form (write-only secrets), test and pin pages, and where each one stands."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from orderflow.scoping import OrganizationScopedAdmin

from .. import admin_views
from ..forms import ERPConnectionForm
from ..models import ERPConnection
from ..outbound.documents import preview_export
from ..services.connection_test import test_connection
from ..services.health import health_of
from ..services.overrides import failed_exports
from .common import actor

SECRET_POST_FIELDS = ("password", "private_key", "private_key_passphrase")
CREDENTIALS = ("password", "clear_password", "private_key", "clear_private_key", "private_key_passphrase",
               "clear_private_key_passphrase", "kept_password", "kept_private_key", "kept_private_key_passphrase",
               "client_public_key")


@admin.register(ERPConnection)
class ERPConnectionAdmin(OrganizationScopedAdmin):
    form = ERPConnectionForm
    # Fits 1366 px: the health column says what matters; the last poll's message is its tooltip.
    list_display = ("name", "organization", "endpoint", "health", "last_poll")
    list_filter = ("is_active", "transport", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "host", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("mapping_preview", "last_poll_at", "last_poll_ok", "last_poll_message", "next_poll_at",
                       "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("organization", "name", "is_active", "transport")}),
        ("Server", {"fields": ("host", "port", "username", "host_key", "identity_check", "connect_timeout_seconds",
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
            path("<path:object_id>/poll-now/", wrap(partial(admin_views.run_now_view, what="poll")),
                 name="connectors_erpconnection_poll_now"),
            path("<path:object_id>/deliver-now/", wrap(partial(admin_views.run_now_view, what="deliver")),
                 name="connectors_erpconnection_deliver_now"),
            path("<path:object_id>/retry-failed/", wrap(admin_views.retry_failed_view),
                 name="connectors_erpconnection_retry_failed"),
            path("<path:object_id>/generate-key/", wrap(admin_views.generate_key_view),
                 name="connectors_erpconnection_generate_key"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        conn = self.get_queryset(request).filter(pk=object_id).first() if object_id.isdigit() else None
        buttons = {
            "can_run_now": request.user.has_perm("connectors.run_now"),
            "failed_count": failed_exports(conn).count() if conn else 0,
            "can_retry": request.user.has_perm("connectors.retry_export"),
            "can_generate_key": bool(conn) and self.has_change_permission(request, conn),
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **buttons})

    def get_fieldsets(self, request: HttpRequest, obj: ERPConnection | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:  # nothing has been polled yet
            fieldsets = [(name, opts) for name, opts in fieldsets if name != "Last poll"]
        if obj is not None and not self.has_change_permission(request, obj):
            # Without change permission: no secret field at all, only whether one is stored.
            return [(name, {**opts, "fields": ("credentials", "client_public_key")}) if opts["fields"] == CREDENTIALS
                    else (name, opts) for name, opts in fieldsets]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ERPConnection | None = None) -> tuple[str, ...]:
        # The pinned keys decide where the secrets go: only those who may pin change them (issue 18).
        pinned = () if request.user.has_perm("connectors.pin_host_key") else ("host_key",)
        return (*self.readonly_fields, "credentials", "client_public_key", "identity_check", *pinned)

    class Media:
        js = ("connectors/connection_form.js",)  # shows the fields of the chosen transport only

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

    @admin.display(description="Server identity check")
    def identity_check(self, obj: ERPConnection) -> str:
        """Which check applies now: an FTPS pin replaces the certificate authorities, which must never be silent."""
        if obj.transport == "ftps":
            if obj.host_key.strip():
                return ("Pinned certificate: only the pinned certificate is accepted; the certificate authorities "
                        "are not asked. Pin the server's new certificate before it changes.")
            return ("Certificate authorities: the server's certificate is checked against the system's certificate "
                    "authorities and the host name. Pinning a certificate replaces this check with the pin.")
        if obj.transport == "sftp":
            return ("Pinned host key: the server must present a pinned key before any credential is sent."
                    if obj.host_key.strip() else "No host key is pinned: nothing is sent until one is pinned "
                    "(test the connection to see the server's key).")
        return "—"

    @admin.display(description="Preview of the file")
    def mapping_preview(self, obj: ERPConnection) -> str:
        if not obj.pk:
            return "Save the connection to see a preview."
        preview = preview_export(connection=obj)
        return format_html('<pre class="of-preview" style="max-height:30em;overflow:auto">{}</pre>', preview)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        for h in health_of(changelist.result_list):  # a fixed number of queries for the whole page
            h.connection.health_now = h
        return changelist

    @admin.display(description="Health")
    def health(self, obj: ERPConnection) -> str:
        """Healthy, degraded, failing, draining (inactive, still read while answers are awaited) or inactive."""
        h = getattr(obj, "health_now", None) or health_of([obj])[0]
        label = f"draining ({h.awaiting} awaiting an answer)" if h.status == "draining" else h.status
        return format_html('<span class="of-state of-state-{}" title="{}"><b>{}</b></span><br>'
                           '<span class="help">{}</span>', h.status, h.reason, label, h.reason)

    @admin.display(description="Last poll", ordering="last_poll_at")
    def last_poll(self, obj: ERPConnection) -> str:
        if obj.last_poll_at is None:
            return "never"
        outcome = "OK" if obj.last_poll_ok else "failed"
        return format_html('<span title="{}">{} — {}</span>', obj.last_poll_message,
                           naturaltime(obj.last_poll_at), outcome)

    @admin.display(description="Endpoint")
    def endpoint(self, obj: ERPConnection) -> str:
        if obj.transport == "local":
            return f"local: {obj.host or '(root)'}{obj.export_path}"
        return f"{obj.transport}://{obj.username}@{obj.host}:{obj.effective_port}"
