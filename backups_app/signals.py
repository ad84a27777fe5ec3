"""Signals sent by the backup services, so that other parts react without being called directly.

backup_finished(sender=BackupRecord, record=...) is sent once a backup's record is final (success,
failed or interrupted): offsite upload, alert e-mails and cache invalidation listen to it.
restore_finished(sender=RestoreRecord, restore=...) likewise for restores.

Receivers are connected in BackupsConfig.ready() (apps.py), never by importing a module for its
side effects.
"""
from django.dispatch import Signal

backup_finished = Signal()
restore_finished = Signal()
