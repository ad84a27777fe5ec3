"""Staff view of the secret provider: configuration, health, known secrets and the access log.

Nothing here can show a value: the models hold none, and the provider's options() excludes
credentials by contract.
"""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from secrets_app.exceptions import SecretsError
from secrets_app.models import KnownSecret, SecretAccess
from secrets_app.selectors import provider_description
from secrets_app.manager import secrets_actor
from secrets_app.services import secrets_access_flush, secrets_check, secrets_provider_check


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are written by the secrets manager only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(KnownSecret)
class KnownSecretAdmin(ReadOnlyAdmin):
    change_list_template = "admin/secrets_app/knownsecret/change_list.html"
    list_display = ("name", "required", "provider", "source", "status", "version", "fingerprint", "resolved_at")
    list_filter = ("status", "source", "required")
    search_fields = ("name",)
    actions = ["resolve_now"]

    @admin.action(description=_("Resolve the selected secrets from the provider now"), permissions=["test"])
    def resolve_now(self, request: HttpRequest, queryset) -> None:
        with secrets_actor(request.user.get_username()):
            statuses = secrets_check(names=list(queryset.values_list("name", flat=True)))
        failed = [status.name for status in statuses if status.status in ("missing", "denied")]
        self.message_user(
            request,
            _("%(count)d secrets resolved; not resolved: %(failed)s") % {
                "count": len(statuses) - len(failed), "failed": ", ".join(failed) or "-"},
            messages.WARNING if failed else messages.SUCCESS,
        )

    def get_urls(self):
        return [
            path("test-connection/", self.admin_site.admin_view(self.test_connection_view),
                 name="secrets_app_knownsecret_test_connection"),
            *super().get_urls(),
        ]

    def has_test_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("secrets_app.test_provider")

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # Rows are refreshed from this process's buffer so staff see the current state.
        secrets_access_flush()
        context = {
            "provider": provider_description(),
            "can_test_provider": self.has_test_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def test_connection_view(self, request: HttpRequest):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        # admin_view only checks is_staff: this view checks its own permission.
        if not self.has_test_permission(request):
            raise PermissionDenied
        try:
            description = secrets_provider_check(actor=request.user.get_username())
        except SecretsError as error:
            self.message_user(request, _("Provider test failed: %(error)s") % {"error": error}, messages.ERROR)
        else:
            self.message_user(request, _("Provider test succeeded: %(result)s") % {"result": description},
                              messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:secrets_app_knownsecret_changelist"))


@admin.register(SecretAccess)
class SecretAccessAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "name", "provider", "outcome", "count", "actor", "detail")
    list_filter = ("outcome", "provider")
    search_fields = ("name", "actor")
    date_hierarchy = "created_at"

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # an access log is append-only
