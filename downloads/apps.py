from django.apps import AppConfig


class DownloadsConfig(AppConfig):
    name = "downloads"

    def ready(self) -> None:
        from builds.signals import version_ready
        from downloads.services import version_ready_receiver

        # The latest version's full archive is built as soon as the version is ready.
        version_ready.connect(version_ready_receiver, dispatch_uid="downloads-latest-archive")
