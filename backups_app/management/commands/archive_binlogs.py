"""Archive the binary log continuously: `manage.py archive_binlogs [--database ALIAS]`.

Runs until stopped (SIGTERM/Ctrl-C: the complete events on disk are archived before it exits).
Without --database it archives every MySQL/MariaDB alias whose server has binary logging on, and
says for each one without it how to turn it on.
"""
import signal
import threading
import time

from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from backups_app.engines.binlog import BinlogUnavailable
from backups_app.exceptions import BackupError
from backups_app.management.base import BackupCommand
from backups_app.services.binlogs import (
    BinlogArchiverRun,
    archiver_record_error,
    binlog_availability,
    binlog_databases,
    segments_check,
)

#: Seconds between two polls of the live files (each poll also writes the heartbeat).
POLL_SECONDS = 1.0
#: Seconds before a run whose streaming client died is started again.
RETRY_SECONDS = 10.0
#: Seconds between two full checks of the stored segments (missing, corrupt).
CHECK_SECONDS = 3600.0


class Command(BackupCommand):
    help = _("Stream each MySQL/MariaDB database's binary log into BACKUP_DIR/binlogs/ for "
             "point-in-time recovery. Runs until stopped.")

    def add_arguments(self, parser):
        parser.add_argument("--database", action="append", dest="databases",
                            help=_("Alias to archive (repeatable; default: every MySQL/MariaDB alias with log_bin on)."))

    def handle(self, *args, databases, **options):
        if not databases and not binlog_databases():
            self.say(_("No MySQL/MariaDB database is configured; no binary log to archive."))
            return
        databases = databases or binlog_databases()
        usable = []
        for database in databases:
            problem = binlog_availability(database=database)
            if problem:
                self.stderr.write(f"{database}: {problem}")
            else:
                usable.append(database)
        if not usable:
            raise CommandError(_("No database to archive."))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_args: stop.set())
        threads = [threading.Thread(target=self.archive, args=(database, stop), name=f"archive-{database}")
                   for database in usable]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop.set()
        for thread in threads:
            thread.join()

    def archive(self, database: str, stop: threading.Event) -> None:
        """One database's loop: run, poll, restart after a failure, until `stop`."""
        from django.db import connections

        last_check = [0.0]

        def check_segments() -> None:
            # A segment deleted or damaged in storage must show as a gap, not surprise a restore.
            if time.monotonic() - last_check[0] >= CHECK_SECONDS:
                for segment in segments_check(database=database):
                    self.stderr.write(f"{database}: {segment.status_message}")
                last_check[0] = time.monotonic()

        while not stop.is_set():
            run = BinlogArchiverRun(database=database)
            try:
                check_segments()
                run.start()
                self.say(_("%(database)s: archiving from %(file)s") % {"database": database, "file": run.first_file})
                while not stop.is_set() and run.running():
                    run.poll()
                    check_segments()
                    stop.wait(POLL_SECONDS)
                run.check_process()
            except (BackupError, BinlogUnavailable) as error:
                self.stderr.write(f"{database}: {error}")
                archiver_record_error(database=database, message=str(error))
            finally:
                run.stop()
                connections.close_all()
            stop.wait(RETRY_SECONDS)
