from django.apps import AppConfig


class OrderflowConfig(AppConfig):
    name = "orderflow"
    verbose_name = "Orders"
    default_auto_field = "django.db.models.BigAutoField"
