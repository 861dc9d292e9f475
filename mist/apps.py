from django.apps import AppConfig


class MistConfig(AppConfig):
    name = "mist"
    verbose_name = "Mist"
