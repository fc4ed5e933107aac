"""The event timeline, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from orderflow.scoping import OrganizationScopedAdmin

from ..models import ConnectorEvent
from .common import ReadOnlyAdminMixin


@admin.register(ConnectorEvent)
class ConnectorEventAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = ("created_at", "level", "kind", "actor", "connection", "export", "message")
    list_filter = ("level", "kind", ("connection", admin.RelatedOnlyFieldListFilter),
                   ("connection__organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("message", "export__filename", "actor")
    list_select_related = ("connection", "export")
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConnectorEvent]:
        # The export is joined for its name; its archived bytes stay in the database.
        return super().get_queryset(request).select_related("connection", "export").defer("export__payload")

    def get_readonly_fields(self, request: HttpRequest, obj: ConnectorEvent | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]
