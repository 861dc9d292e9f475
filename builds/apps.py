from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "builds"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        post_spawn.connect(_recover_on_spawn, dispatch_uid="mist-recover-jobs")


def _recover_on_spawn(sender: object, proc_name: str = "", **kwargs: object) -> None:
    """A worker process starting is the moment to pick up jobs a killed worker left running."""
    from builds.jobs import recover_jobs

    try:
        recover_jobs()
    except Exception:  # never keep a worker from starting
        import logging

        logging.getLogger("mist.jobs").exception("job recovery at worker start failed")
