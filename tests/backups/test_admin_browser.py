"""End to end in a real headless Chromium: log in, back up now, see it succeed, download, restore.

Debian's /usr/bin/chromium is driven through Playwright for Python (`playwright install` is never
needed: the system browser is used). Skipped when the browser is missing, except under
OPSDESK_REQUIRE_SERVICES=1. Set OPSDESK_SCREENSHOTS=<folder> to keep screenshots of the pages.
"""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pytest

from backups_app.models import BackupRecord, RestoreRecord

from .admin_fixtures import *  # noqa: F401,F403
from .admin_fixtures import APP_ALIAS, app_rows, make_user, store_backup
from ..conftest import services_required

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser_locale() -> str:
    return "en-US"


@pytest.fixture
def browser_page(tmp_path, browser_locale):
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if services_required():
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # synchronous and safe, so Django's async guard is lifted for this test only.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1680, "height": 1000}, locale=browser_locale,
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            if previous is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def screenshot(page, name: str) -> None:
    folder = os.environ.get("OPSDESK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_back_up_download_and_restore_in_the_browser(
    transactional_db, live_server, app_database, browser_page, tmp_path,
):
    page = browser_page
    make_user("operator", is_superuser=True)
    # Some history, so that the list and the dashboard's chart have something to show.
    for hours, size in ((72, 2000), (48, 6000), (24, 3000)):
        store_backup(database=APP_ALIAS, age=timedelta(hours=hours), payload=os.urandom(size))
    store_backup(database=APP_ALIAS, age=timedelta(hours=30), status=BackupRecord.Status.FAILED)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-operator")
    page.click("input[type=submit]")
    page.wait_for_selector("#backup-dashboard")
    screenshot(page, "dashboard")

    page.goto(f"{live_server.url}/admin/backups_app/backuprecord/")
    page.select_option("select#id_database", APP_ALIAS)
    page.click("#backup-now")
    page.wait_for_selector("ul.messagelist li.success")
    # The list refreshes itself while the backup runs; wait for the final badge.
    record = None
    for _ in range(60):
        record = BackupRecord.objects.filter(database=APP_ALIAS, trigger="admin").order_by("-created_at").first()
        if record and record.status not in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            break
        page.wait_for_timeout(500)
    assert record is not None and record.status == BackupRecord.Status.SUCCESS, record and record.error_message
    page.goto(f"{live_server.url}/admin/backups_app/backuprecord/")
    row = page.locator("#result_list tr", has_text=record.name)
    assert row.locator(".backup-badge--success").count() == 1
    screenshot(page, "list")

    row.locator("a", has_text=record.name).click()
    page.wait_for_selector("#backup-download")
    screenshot(page, "record")
    with page.expect_download() as download_info:
        page.click("#backup-download")
    downloaded = tmp_path / "downloaded"
    download_info.value.save_as(downloaded)
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == record.sha256

    # Change the product database, so that the restore has something to undo.
    import sqlite3

    with sqlite3.connect(app_database) as connection:
        connection.execute("DELETE FROM customer")
    connection.close()
    assert app_rows(app_database) == []

    page.click("#backup-restore")
    screenshot(page, "restore")
    page.fill("#id_confirm_database", "wrong")
    page.click("#restore-submit")
    page.wait_for_selector(".errornote >> text=Nothing was restored")
    assert not RestoreRecord.objects.exists()
    page.fill("#id_confirm_database", APP_ALIAS)
    page.click("#restore-submit")
    page.wait_for_selector("#restore-status")
    for _ in range(60):
        if RestoreRecord.objects.get().status not in (RestoreRecord.Status.QUEUED, RestoreRecord.Status.RUNNING):
            break
        page.wait_for_timeout(500)
        page.reload()
    page.reload()
    screenshot(page, "restored")
    restore = RestoreRecord.objects.get()
    assert restore.status == RestoreRecord.Status.SUCCESS, restore.error_message
    assert page.inner_text("#restore-status") == restore.get_status_display()
    assert restore.safety_backup is not None
    assert app_rows(app_database) == ["Ana", "João", "Zoë"]


@pytest.mark.parametrize("browser_locale", ["pt-BR"])
def test_the_console_speaks_portuguese_in_the_browser(transactional_db, live_server, browser_locale, browser_page):
    page = browser_page
    make_user("maria", is_superuser=True)
    store_backup(age=timedelta(hours=40))
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "maria")
    page.fill("#id_password", "pw-maria")
    page.click("input[type=submit]")
    page.wait_for_selector("#backup-dashboard")
    assert "Saúde dos backups" in page.inner_text("#backup-dashboard")
    assert "Nenhum backup válido de default há" in page.inner_text("#backup-dashboard")
    screenshot(page, "dashboard-pt-br")
    page.goto(f"{live_server.url}/admin/backups_app/backuprecord/")
    assert page.inner_text("#backup-now").strip().lower() == "fazer backup agora"
    screenshot(page, "list-pt-br")
