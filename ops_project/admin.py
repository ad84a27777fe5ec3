"""The admin site of opsdesk: its own name, and no link to a public site that does not exist."""
from django.contrib import admin
from django.utils.translation import gettext_lazy as _


class OpsAdminSite(admin.AdminSite):
    site_header = _("opsdesk")
    site_title = _("opsdesk")
    index_title = _("Overview")
    # opsdesk has no public site: Django's "View site" would lead to a 404.
    site_url = None
    # The index already lists every page; the sidebar would take 300 px from the tables at 1400 px.
    enable_nav_sidebar = False
    # The same dash for "nothing" on every page (opsdesk's own columns use it too).
    empty_value_display = "—"
    # The backup overview (health, schedules, charts) above the app list: backups_app ships it, so
    # that a host project opts into the same page with this one attribute (docs/INSTALLING.md).
    index_template = "admin/backups_app/index.html"
