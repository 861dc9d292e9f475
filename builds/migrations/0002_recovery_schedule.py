"""Every minute the worker re-queues jobs whose worker died (see builds.jobs.recover_jobs)."""

from django.db import migrations


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="mist: recover stale jobs",
        defaults={"func": "builds.tasks.recover_stale_jobs", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="mist: recover stale jobs").delete()


class Migration(migrations.Migration):
    dependencies = [("builds", "0001_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
