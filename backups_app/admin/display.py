"""How the admin pages show sizes, moments and small tables: one way on every page."""
from __future__ import annotations

from datetime import datetime

from django.template.defaultfilters import filesizeformat
from django.utils.formats import date_format, number_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import ngettext

EMPTY = "—"


def human_size(size_bytes: int | None) -> str:
    """`6.3 MB`, with the exact byte count on hover."""
    if size_bytes is None:
        return EMPTY
    exact = ngettext("%(count)s byte", "%(count)s bytes", size_bytes) % {
        "count": number_format(size_bytes, force_grouping=True),
    }
    return format_html('<span title="{}">{}</span>', exact, filesizeformat(size_bytes))


def moment(value: datetime | None) -> str:
    """The one date format of the console (settings FORMAT_MODULE_PATH: seconds and time zone)."""
    if value is None:
        return EMPTY
    local = localtime(value)
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), date_format(local, "DATETIME_FORMAT"))


def small_table(rows: dict | None, *, key_header: str, value_header: str, numeric: bool = False) -> str:
    """A two-column table of a JSON object (row counts, tool versions) instead of its raw text."""
    if not rows:
        return EMPTY
    cells = format_html_join(
        "", '<tr><td>{}</td><td class="{}">{}</td></tr>',
        (
            (key, "backup-number" if numeric else "", number_format(value, force_grouping=True) if numeric else value)
            for key, value in sorted(rows.items())
        ),
    )
    return format_html(
        '<table class="backup-small-table"><thead><tr><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>',
        key_header, value_header, cells,
    )


