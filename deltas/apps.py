from django.apps import AppConfig


class DeltasConfig(AppConfig):
    name = "deltas"

    def ready(self) -> None:
        from builds.signals import version_pushed
        from deltas.services import on_version_pushed

        version_pushed.connect(on_version_pushed, dispatch_uid="deltas-direct-delta")
