"""The Celery application: `celery -A ops_project worker -B`.

Configuration comes from Django settings under the CELERY_ prefix; tasks are found in each app's
tasks.py module.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")

app = Celery("ops_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
