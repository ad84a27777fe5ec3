"""Admin for API tokens: created here (the token is shown once), listed, revoked; the hash never shown."""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from backups_app.access import token_issue_check
from backups_app.admin.backups import badge
from backups_app.admin.base import ServiceWrittenAdmin
from backups_app.admin.display import moment
from backups_app.exceptions import AccessRefused
from backups_app.models import ApiToken, AuditEntry
from backups_app.services.tokens import api_token_create, api_token_revoke


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name", "expires_at"]
        help_texts = {
            "user": _("The API acts as this user: it must be staff and hold the permissions each endpoint needs."),
            "expires_at": _("Leave empty for a token that does not expire."),
        }

    def __init__(self, *args, issued_by=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.issued_by = issued_by
        if issued_by is not None and not issued_by.is_superuser:
            # Tokens for oneself only: the list offers nobody else, and a forged id fails validation.
            user_field = self.fields["user"]
            user_field.queryset = user_field.queryset.filter(pk=issued_by.pk)
            user_field.initial = issued_by.pk
            user_field.help_text = _("Only a superuser may create a token for someone else.")

    def clean_user(self):
        user = self.cleaned_data["user"]
        try:
            token_issue_check(owner=user, issued_by=self.issued_by)
        except AccessRefused as error:
            raise forms.ValidationError(str(error), code="not_yours") from None
        return user

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(_("The expiry must be in the future."))
        return expires_at


class TokenStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", _("active")), ("expired", _("expired")), ("revoked", _("revoked"))]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    class Media:
        css = ServiceWrittenAdmin.Media.css

    # Created and revoked moments are on the record page; the state says what matters in the list.
    list_display = ["prefix", "name", "user", "state", "last_used_column", "expires_column"]
    list_filter = [TokenStateFilter]
    list_select_related = ["user"]
    search_fields = ["prefix", "name", "user__username"]
    actions = ["revoke_tokens"]
    date_hierarchy = "created_at"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            form_class = super().get_form(request, obj, form=ApiTokenAddForm, **kwargs)

            class IssuedByRequestUserForm(form_class):
                def __init__(self, *args, **form_kwargs):
                    super().__init__(*args, issued_by=request.user, **form_kwargs)

            return IssuedByRequestUserForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        # token_hash is in neither list: the admin never shows it.
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["prefix", "name", "user", "created_at", "last_used_at", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["prefix", "user", "created_at", "last_used_at", "expires_at", "revoked_at"]

    @admin.display(description=_("state"))
    def state(self, token: ApiToken) -> str:
        if token.revoked_at is not None:
            return badge("token-revoked", _("revoked"))
        if token.expires_at is not None and token.expires_at <= timezone.now():
            return badge("token-expired", _("expired"))
        return badge("token-active", _("active"))

    @admin.display(description=_("last used"), ordering="last_used_at")
    def last_used_column(self, token: ApiToken) -> str:
        return moment(token.last_used_at) if token.last_used_at else _("never")

    @admin.display(description=_("expires"), ordering="expires_at")
    def expires_column(self, token: ApiToken) -> str:
        return moment(token.expires_at) if token.expires_at else _("never")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # The form refused it already; this is the wall behind it (see backups_app/access.py).
        try:
            token_issue_check(owner=obj.user, issued_by=request.user)
        except AccessRefused:
            raise PermissionDenied from None
        issued = api_token_create(
            user=obj.user,
            name=obj.name,
            expires_at=obj.expires_at,
            source=AuditEntry.Source.ADMIN,
            created_by=request.user,
            request=request,
        )
        # The service created the row; point the form's instance at it so the admin's history
        # entry and redirects refer to the saved token.
        for field_name in ("id", "prefix", "token_hash", "created_at", "expires_at"):
            setattr(obj, field_name, getattr(issued.token, field_name))
        obj._state.adding = False
        obj._state.db = issued.token._state.db
        # Kept on this request only, to be shown once by response_add and then gone.
        request.issued_api_token = issued

    def response_add(self, request, obj, post_url_continue=None):
        issued = getattr(request, "issued_api_token", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("API token created"),
            "token": issued.token,
            "raw_token": issued.raw_token,
        }
        response = TemplateResponse(request, "admin/backups_app/apitoken/token_created.html", context)
        # The page holds the raw token: no browser or proxy may keep a copy.
        add_never_cache_headers(response)
        return response

    @admin.action(description=_("Revoke the selected tokens"), permissions=["change"])
    def revoke_tokens(self, request, queryset):
        revoked = sum(
            api_token_revoke(token=token, source=AuditEntry.Source.ADMIN, user=request.user, request=request)
            for token in queryset.select_related("user")
        )
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", revoked) % {"count": revoked},
        )
