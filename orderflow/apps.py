from django.apps import AppConfig


class OrderflowConfig(AppConfig):
    name = "orderflow"
    verbose_name = "Orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .admin_lookups import install

        install()  # no admin URL filters by a secret or by a regular expression
