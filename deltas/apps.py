from django.apps import AppConfig


class DeltasConfig(AppConfig):
    name = "deltas"
