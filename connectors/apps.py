from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "ERP connectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import checks, signals  # noqa: F401  (register the system checks, connect the receivers)
        from .work.schedules import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="connectors.ensure_schedules")
        from .observability.logs import connect_task_context

        connect_task_context()  # a django-q2 task's log lines carry its id
