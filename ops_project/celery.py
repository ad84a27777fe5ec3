"""The Celery application: `celery -A ops_project worker -B` runs a worker with beat embedded.

Configuration comes from Django settings under the CELERY_ prefix; tasks are found in each app's
tasks.py module. Beat reads its schedule from the database (django-celery-beat's
DatabaseScheduler), so staff edit it in the admin (Periodic tasks) and changes apply without a
restart. Run exactly one beat per installation (either `worker -B` on one machine, or
`celery -A ops_project beat` once); start as many workers as you like, on as many machines as
share the broker: a database is never backed up or restored twice at once, because the backup
services take a per-database lock (file lock on one machine, Redis across machines).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ops_project.settings")

app = Celery("ops_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
