from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing registers them: the audit receivers and the OpenAPI auth scheme.
        from accounts import schema, signals  # noqa: F401
