from django.apps import AppConfig


class TraderConfig(AppConfig):
    name = "trader"
    default_auto_field = "django.db.models.BigAutoField"
