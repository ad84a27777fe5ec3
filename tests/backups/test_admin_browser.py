"""End to end in a real headless Chromium, 1400 px wide: log in, back up now, see it succeed,
download, restore; then every page in English and in Brazilian Portuguese.

Debian's /usr/bin/chromium is driven through Playwright for Python (`playwright install` is never
needed: the system browser is used). Skipped when the browser is missing, except under
OPSDESK_REQUIRE_SERVICES=1. Screenshots of every page go to var/screenshots/<locale>/ (gitignored,
kept by CI; OPSDESK_SCREENSHOTS=<folder> puts them elsewhere); the folder is printed at the end of
the run.
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
from .conftest import SCREENSHOTS_TAKEN, screenshots_folder
from ..conftest import services_required

CHROMIUM = "/usr/bin/chromium"
#: The width the pages are judged at: a laptop, with the filters beside the lists.
VIEWPORT = {"width": 1400, "height": 900}
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser_locale() -> str:
    return "en-US"


@pytest.fixture
def browser_page(chromium, browser_locale):
    """A page 1400 px wide in the browser language of the test."""
    context = chromium.new_context(accept_downloads=True, viewport=VIEWPORT, locale=browser_locale)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


def screenshot(page, name: str) -> Path:
    """A full-page PNG under the screenshots folder, one subfolder per browser language."""
    path = screenshots_folder() / page.evaluate("navigator.language") / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS_TAKEN.append(path)
    return path


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
    screenshot(page, "flow-1-index")

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
    screenshot(page, "flow-2-backups")

    row.locator("a", has_text=record.name).click()
    page.wait_for_selector("#backup-download")
    screenshot(page, "flow-3-backup")
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
    screenshot(page, "flow-4-restore-confirmation")
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
    screenshot(page, "flow-5-restored")
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
    screenshot(page, "flow-index")
    page.goto(f"{live_server.url}/admin/backups_app/backuprecord/")
    assert page.inner_text("#backup-now").strip().lower() == "fazer backup agora"
    screenshot(page, "flow-backups")


# --- Every page, in English and Portuguese ---------------------------------------------------------

def english_staff_phrases() -> set[str]:
    """English phrases of every catalog the console uses whose pt-BR differs (from the compiled .mo).

    Phrases of two words or more without placeholders: short words ("Backups", "Redis") read the
    same in both languages, and placeholders never appear verbatim on a page.
    """
    import gettext

    import django

    from .conftest import PROJECT_ROOT

    django_admin = Path(django.__file__).parent / "contrib" / "admin" / "locale"
    catalogs = [
        PROJECT_ROOT / "locale", PROJECT_ROOT / "locale" / "extra", PROJECT_ROOT / "backups_app" / "locale",
        PROJECT_ROOT / "secrets_app" / "locale", PROJECT_ROOT / "cache_app" / "locale", django_admin,
    ]
    phrases = set()
    for folder in catalogs:
        with open(folder / "pt_BR" / "LC_MESSAGES" / "django.mo", "rb") as compiled:
            catalog = gettext.GNUTranslations(compiled)._catalog
        for msgid, msgstr in catalog.items():
            if not isinstance(msgid, str) or msgid == msgstr or "%" in msgid or "{" in msgid:
                continue
            if len(msgid.split()) >= 2:
                phrases.add(msgid.strip())
    return phrases


def log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("input[type=submit]")
    page.wait_for_selector("#backup-dashboard")


def assert_no_sideways_scroll(page, name: str) -> None:
    """Every column of a list is in view at 1400 px: the results box does not scroll sideways."""
    widths = page.evaluate(
        "() => { const box = document.querySelector('.results');"
        " return box ? [box.scrollWidth, box.clientWidth] : [0, 0]; }"
    )
    assert widths[0] <= widths[1] + 1, f"{name}: the list is {widths[0]} px wide in a {widths[1]} px box"


def assert_no_english(page, name: str, phrases: set[str]) -> None:
    text = page.inner_text("body").lower()
    # What the audit log recorded (its target and detail) is data, kept in the words it was written in.
    for data in page.locator("td.field-target, td.field-detail").all_inner_texts():
        text = text.replace(data.lower(), "")
    # CSS upper-cases some headers, hence the comparison in lower case.
    left = sorted(phrase for phrase in phrases if phrase.lower() in text)
    assert not left, f"{name}: English left on the pt-BR page: {left}"


@pytest.fixture
def chromium():
    """Debian's Chromium through Playwright (no browser download); skipped, or failed under
    OPSDESK_REQUIRE_SERVICES=1, when it is missing. Playwright's sync API runs an event loop in this
    thread; the test's own ORM calls are synchronous and safe, so Django's async guard is lifted."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if services_required():
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    try:
        from playwright import sync_api
    except ImportError:
        message = "Playwright is not installed (pip install -r requirements-browser.txt)"
        if services_required():
            pytest.fail(f"{message}; OPSDESK_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
            if previous is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def console_with_history() -> dict[str, str]:
    """Two databases with a history: good backups, a failed one, one running, a restore, a token.

    Returns the admin paths to look at, by screenshot name.
    """
    from django.contrib.auth.models import User

    from backups_app.models import ApiToken
    from backups_app.services.schedule import backup_schedule_ensure
    from backups_app.services.tokens import api_token_create

    for hours, size in ((96, 2000), (72, 6000), (48, 9000), (24, 12000)):
        store_backup(database=APP_ALIAS, age=timedelta(hours=hours), payload=os.urandom(size))
        store_backup(database="default", age=timedelta(hours=hours + 1), payload=os.urandom(size // 4))
    good = store_backup(database=APP_ALIAS, age=timedelta(hours=2), payload=os.urandom(3000))
    good.tool_versions = {"sqlite3": "3.40.1"}
    good.table_row_counts = {"customer": 3, "ticket": 12045}
    good.save(update_fields=["tool_versions", "table_row_counts"])
    failed = store_backup(database=APP_ALIAS, age=timedelta(hours=5), status=BackupRecord.Status.FAILED)
    # A running backup as the service leaves it between two progress writes.
    running = BackupRecord.objects.create(
        name="backup_app_running.sql.gz", database=APP_ALIAS, engine="sqlite", trigger="admin",
        status=BackupRecord.Status.RUNNING, compression="gzip", progress_bytes=123_456_789,
        created_at=good.created_at + timedelta(hours=1), started_at=good.created_at + timedelta(hours=1),
    )
    restore = RestoreRecord.objects.create(
        backup=good, backup_name=good.name, database=APP_ALIAS, status=RestoreRecord.Status.SUCCESS,
        trigger="admin", user=User.objects.get(username="operator"), duration_seconds=4.2,
    )
    # The second database gets its schedule from what every process start runs (no explicit install).
    backup_schedule_ensure()
    api_token_create(user=User.objects.get(username="operator"), name="grafana", source="cli",
                     expires_in_days=90)
    assert ApiToken.objects.count() == 1
    # Someone guessing passwords, as django-axes records it.
    from axes.models import AccessAttempt

    AccessAttempt.objects.create(
        username="mallory", ip_address="203.0.113.9", user_agent="curl/8.5", http_accept="*/*",
        path_info="/admin/login/", get_data="", post_data="username=mallory", failures_since_start=3,
    )
    # Records written here, not by a finished backup: drop a summary an earlier test left cached.
    from backups_app.dashboard import dashboard_invalidate

    dashboard_invalidate()
    return {
        "01-index": "/admin/",
        "02-backups": "/admin/backups_app/backuprecord/",
        "03-backup-good": f"/admin/backups_app/backuprecord/{good.pk}/change/",
        "04-backup-failed": f"/admin/backups_app/backuprecord/{failed.pk}/change/",
        "05-backup-running": f"/admin/backups_app/backuprecord/{running.pk}/change/",
        "06-restores": "/admin/backups_app/restorerecord/",
        "07-restore": f"/admin/backups_app/restorerecord/{restore.pk}/change/",
        "08-audit-log": "/admin/backups_app/auditentry/",
        "09-api-tokens": "/admin/backups_app/apitoken/",
        "10-retention-policy": "/admin/backups_app/retentionpolicy/add/",
        "12-secrets": "/admin/secrets_app/knownsecret/",
        "13-periodic-tasks": "/admin/django_celery_beat/periodictask/",
        "14-login-lockouts": "/admin/axes/accessattempt/",
        "15-redis": "/admin/cache_app/",
    }


def test_every_page_reads_well_in_english_and_portuguese(
    transactional_db, live_server, app_database, chromium,
):
    make_user("operator", is_superuser=True)
    pages = console_with_history()
    phrases = english_staff_phrases()
    for locale in ("en-US", "pt-BR"):
        context = chromium.new_context(viewport=VIEWPORT, locale=locale)
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            log_in(page, live_server.url, "operator")
            for name, path in pages.items():
                page.goto(f"{live_server.url}{path}")
                assert page.title().endswith("| opsdesk"), (name, page.title())
                assert "Django" not in page.inner_text("#header")
                if page.locator(".results").count():
                    assert_no_sideways_scroll(page, name)
                if locale == "pt-BR":
                    assert_no_english(page, name, phrases)
                screenshot(page, name)
                check_page(page, name, locale)
            # The retention preview, from the form as filled in.
            page.goto(f"{live_server.url}{pages['10-retention-policy']}")
            page.select_option("#id_database", APP_ALIAS)
            page.fill("#id_keep_days", "2")
            page.fill("#id_keep_last", "1")
            page.click("input[name=_preview]")
            page.wait_for_selector("#retention-preview")
            if locale == "pt-BR":
                assert_no_english(page, "11-retention-preview", phrases)
            else:
                preview = page.inner_text("#retention-preview")
                assert "it is the newest good backup" in preview and "keep_days" not in preview
            screenshot(page, "11-retention-preview")
        finally:
            context.close()


def check_page(page, name: str, locale: str) -> None:
    """What each page must show, beyond reading well."""
    english = locale == "en-US"
    if name == "01-index":
        # One pair of charts per database with a history, each with values on its axes.
        assert page.locator(".backup-chart-group").count() == 2
        assert page.locator(".backup-chart-svg .y-label").count() >= 8
        header = page.locator(".backup-health thead th").nth(1).bounding_box()
        assert header["height"] < 40, "the 'last good backup' header wraps"
    elif name == "02-backups":
        row = page.locator("#result_list tr", has_text="backup_app_running.sql.gz")
        assert row.locator(".backup-badge--running").count() == 1
        assert row.locator(".backup-progress").inner_text().startswith("117.7" if english else "117,7")
        for column in ("checks_column", "created_column"):
            box = page.locator(f"#result_list th.column-{column}").bounding_box()
            assert box["x"] + box["width"] <= VIEWPORT["width"], column
    elif name == "03-backup-good":
        assert page.locator(".field-status_column .backup-badge--success").count() == 1
        assert page.locator(".field-row_counts_table table td", has_text="12,045" if english else "12.045").count()
        assert page.locator(".field-size_display span[title$='bytes']").count() == 1
        assert page.locator(".field-progress_display").count() == 0  # only while running
    elif name == "04-backup-failed":
        error = page.locator("#backup-error")
        assert "Got error 1045" in error.inner_text()
        # The error comes before every field of the record.
        assert error.bounding_box()["y"] < page.locator(".field-name").bounding_box()["y"]
    elif name == "05-backup-running":
        assert page.locator(".field-progress_display").inner_text().strip().endswith("MB")
    elif name == "13-periodic-tasks":
        assert page.locator("#result_list a", has_text=f"opsdesk: backup {APP_ALIAS}").count() == 1


def test_a_queue_nobody_takes_is_red_on_the_index(transactional_db, live_server, settings, redis_url, chromium):
    """A broker configured, no worker consuming it, a backup queued minutes ago: the index says so."""
    settings.CELERY_BROKER_URL = redis_url
    settings.BACKUP_QUEUE_WAIT_SECONDS = 60
    make_user("operator", is_superuser=True)
    from django.utils import timezone

    BackupRecord.objects.create(
        name="backup_waiting.sql.gz", database="default", engine="sqlite", trigger="admin",
        status=BackupRecord.Status.QUEUED, compression="gzip", created_at=timezone.now() - timedelta(minutes=5),
    )
    from backups_app.dashboard import dashboard_invalidate

    dashboard_invalidate()
    for locale in ("en-US", "pt-BR"):
        context = chromium.new_context(viewport=VIEWPORT, locale=locale)
        page = context.new_page()
        try:
            log_in(page, live_server.url, "operator")
            page.goto(f"{live_server.url}/admin/")
            assert page.locator("#liveness-worker-down").is_visible()
            assert page.locator("#liveness-waiting").is_visible()
            screenshot(page, "16-index-no-worker")
            page.goto(f"{live_server.url}/admin/backups_app/backuprecord/")
            assert page.locator("#result_list .backup-waiting").count() == 1
            screenshot(page, "17-backups-waiting")
        finally:
            context.close()
