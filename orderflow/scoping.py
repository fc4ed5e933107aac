"""Organization scoping for staff: a non-superuser sees and acts only on their organizations' rows.

Each model says how it reaches its organization (``register``); the admin
mixin then scopes change lists, typed object URLs, actions (they act on the
change list's queryset), search, filters, date drill-downs and the choices
of every foreign key.  The connector app registers its own models the same
way, so this module knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from .models import DraftOrder, DraftOrderLine, Organization

# model -> function(organization ids subquery) -> Q on that model
_PATHS: dict[type[Model], Callable[[QuerySet], Q]] = {}


def register(model: type[Model], path: str | Callable[[QuerySet], Q]) -> None:
    """``path``: the lookup from ``model`` to its Organization (``""`` for Organization itself), or a Q builder."""
    if callable(path):
        _PATHS[model] = path
    else:
        lookup = f"{path}__in" if path else "pk__in"
        _PATHS[model] = lambda orgs: Q(**{lookup: orgs})


register(Organization, "")
register(DraftOrder, "organization")
register(DraftOrderLine, "draft__organization")


def organizations_of(user: Any) -> QuerySet[Organization]:
    return Organization.objects.filter(members=user)


def scope(queryset: QuerySet, user: Any) -> QuerySet:
    """``queryset`` limited to ``user``'s organizations (unchanged for superusers; nothing for unknown models)."""
    if user.is_superuser:
        return queryset
    builder = _PATHS.get(queryset.model)
    if builder is None or not user.is_active:
        return queryset.none()
    return queryset.filter(builder(organizations_of(user).values("pk")))


class OrganizationScopedAdmin(admin.ModelAdmin):
    """Change lists, object pages, actions, search, filters and foreign-key choices, scoped to the user."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope(super().get_queryset(request), request.user)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model in _PATHS and "queryset" not in kwargs:
            kwargs["queryset"] = scope(db_field.related_model._default_manager.all(), request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model in _PATHS and "queryset" not in kwargs:
            kwargs["queryset"] = scope(db_field.related_model._default_manager.all(), request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ScopedInlineMixin:
    """Inline rows are scoped too (a draft's lines and exports are its organization's anyway)."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope(super().get_queryset(request), request.user)
