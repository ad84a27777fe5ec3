"""Shared shapes of the backups_app admin classes."""
from django.contrib import admin
from django.http import HttpRequest


class ServiceWrittenAdmin(admin.ModelAdmin):
    """Rows the services write: nobody adds or edits one by hand (each admin decides on deletion)."""

    class Media:
        css = {"all": ("backups_app/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AppendOnlyAdmin(ServiceWrittenAdmin):
    """A history: not even a superuser may delete an entry."""

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
