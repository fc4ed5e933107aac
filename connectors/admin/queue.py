"""django-q2's own admin pages (tasks, failures, schedules, queue) are for superusers only.

Their rows name connections and carry results of every organization; they
cannot be scoped to one, so staff users do not see them at all.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django_q import models as q_models


def _superusers_only(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """The same admin, with every permission also requiring a superuser."""

    class SuperusersOnly(admin_class):  # type: ignore[valid-type,misc]
        def has_module_permission(self, request: HttpRequest) -> bool:
            return request.user.is_superuser and super().has_module_permission(request)

        def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
            return request.user.is_superuser and super().has_view_permission(request, obj)

        def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
            return request.user.is_superuser and super().has_change_permission(request, obj)

        def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
            return request.user.is_superuser and super().has_delete_permission(request, obj)

        def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
            return request.user.is_superuser and super().has_add_permission(request, *args)

    SuperusersOnly.__name__ = admin_class.__name__
    return SuperusersOnly


for _model in (q_models.Success, q_models.Failure, q_models.Schedule, q_models.OrmQ):
    if admin.site.is_registered(_model):
        _admin = type(admin.site._registry[_model])
        admin.site.unregister(_model)
        admin.site.register(_model, _superusers_only(_admin))
