"""Staff view of the secret provider: configuration, health, known secrets and the access log.

Nothing here can show a value: the models hold none, and the provider's options() excludes
credentials by contract.
"""
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from secrets_app.exceptions import SecretsError
from secrets_app.models import KnownSecret, SecretAccess
from secrets_app.selectors import obsolete_secret_names, provider_description
from secrets_app.manager import secrets_actor
from secrets_app.services import secrets_access_flush, secrets_check, secrets_provider_check

# Plain labels of the providers' options() keys (secrets_app/providers/*.py).
OPTION_LABELS = {
    "env_file": _("File read besides the environment"),
    "region": _("Region"),
    "endpoint_url": _("Endpoint"),
    "prefix": _("Name prefix"),
    "timeout_seconds": _("Timeout"),
    "vault_url": _("Key Vault URL"),
    "address": _("Address"),
    "mount": _("KV mount"),
    "path": _("Path"),
    "auth": _("Authentication"),
}
# What "Test connection" does with each provider, said on the button's page and in its message.
PROVIDER_TESTS = {
    "local": _("reads the process environment and the .env file"),
    "aws": _("lists one secret in AWS Secrets Manager with the configured credentials"),
    "vault": _("checks that Vault is unsealed and looks up its own token"),
    "azure": _("reads a secret from Key Vault with the configured credentials"),
}


def human_seconds(seconds: float) -> str:
    """`5 minutes`, `1 day`: Django's timesince, translated, for a configured duration."""
    if not seconds:
        return gettext("0 seconds") if seconds == 0 else "—"
    if seconds < 60:
        return ngettext("%(count)d second", "%(count)d seconds", int(seconds)) % {"count": int(seconds)}
    now = timezone.now()
    return timesince(now - timedelta(seconds=seconds), now)


def provider_rows(provider: dict) -> list[tuple[str, str]]:
    """The provider panel as (label, value) rows, in plain words and human units."""
    rows = []
    for option, value in provider["options"].items():
        label = OPTION_LABELS.get(option, option)
        if option == "timeout_seconds" and value:
            value = human_seconds(float(value))
        rows.append((label, value or "—"))
    return rows


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are written by the secrets manager only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(KnownSecret)
class KnownSecretAdmin(ReadOnlyAdmin):
    change_list_template = "admin/secrets_app/knownsecret/change_list.html"
    list_display = ("name", "required_column", "provider", "source", "status", "version", "fingerprint", "resolved_at")
    list_filter = ("status", "source", "required")
    search_fields = ("name",)
    actions = ["resolve_now"]

    def result_count_label(self, count: int) -> str:
        return ngettext("%(count)d secret", "%(count)d secrets", count) % {"count": count}

    def get_queryset(self, request: HttpRequest):
        # DATABASE_PASSWORD_<ALIAS> of an alias that is no longer configured is not missing: unused.
        return super().get_queryset(request).exclude(name__in=obsolete_secret_names())

    @admin.display(description=_("required"), ordering="required")
    def required_column(self, secret: KnownSecret) -> str:
        # A red cross for "optional" read as an error; only "required" is worth a mark.
        if secret.required:
            return format_html("<strong>{}</strong>", gettext("required"))
        return gettext("optional")

    @admin.action(description=_("Resolve the selected secrets from the provider now"), permissions=["test"])
    def resolve_now(self, request: HttpRequest, queryset) -> None:
        with secrets_actor(request.user.get_username()):
            statuses = secrets_check(names=list(queryset.values_list("name", flat=True)))
        failed = [status.name for status in statuses if status.status in ("missing", "denied")]
        resolved = len(statuses) - len(failed)
        message = ngettext("%(count)d secret resolved.", "%(count)d secrets resolved.", resolved) % {"count": resolved}
        if failed:
            message += " " + gettext("Not resolved: %(names)s.") % {"names": ", ".join(failed)}
        self.message_user(request, message, messages.WARNING if failed else messages.SUCCESS)

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
        provider = provider_description()
        context = {
            "title": _("Secret provider and known secrets"),
            "provider": provider,
            "provider_rows": provider_rows(provider),
            "provider_test": PROVIDER_TESTS.get(provider["provider"], _("reads a secret with the configured credentials")),
            "cache_ttl": human_seconds(provider["cache_ttl_seconds"]),
            "max_stale": human_seconds(provider["max_stale_seconds"]),
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
        provider = provider_description()["provider"]
        tested = {
            "provider": provider,
            "test": PROVIDER_TESTS.get(provider, _("reads a secret with the configured credentials")),
        }
        try:
            description = secrets_provider_check(actor=request.user.get_username())
        except SecretsError as error:
            self.message_user(
                request,
                gettext("Connection test of the %(provider)s provider failed (it %(test)s): %(error)s")
                % {**tested, "error": error},
                messages.ERROR,
            )
        else:
            self.message_user(
                request,
                gettext("Connection test of the %(provider)s provider succeeded: it %(test)s (%(result)s).")
                % {**tested, "result": description},
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:secrets_app_knownsecret_changelist"))


@admin.register(SecretAccess)
class SecretAccessAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "name", "provider", "outcome", "count", "actor", "detail")
    list_filter = ("outcome", "provider")
    search_fields = ("name", "actor")
    date_hierarchy = "created_at"

    def result_count_label(self, count: int) -> str:
        return ngettext("%(count)d entry", "%(count)d entries", count) % {"count": count}

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # an access log is append-only
