"""What opsdesk knows about its secrets, and who read them. Never a value, never a credential."""
from django.db import models
from django.utils.translation import gettext_lazy as _


class Outcome(models.TextChoices):
    FETCHED = "fetched", _("fetched from the provider")
    HIT = "hit", _("cache hits (aggregated)")
    FALLBACK = "fallback", _("fallback to environment/.env")
    STALE = "stale", _("stale value served")
    DENIED = "denied", _("access denied")
    MISSING = "missing", _("missing")
    ROTATED = "rotated", _("rotated")


class SecretAccess(models.Model):
    """One access-log line. Cache hits are aggregated: one line per secret per flush, with a count."""

    Outcome = Outcome

    created_at = models.DateTimeField(_("when"), db_index=True)
    name = models.CharField(_("secret"), max_length=255, db_index=True)
    provider = models.CharField(_("provider"), max_length=50)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices, db_index=True)
    count = models.PositiveIntegerField(_("count"), default=1)
    # A user name when the admin or a command read it, else "host:pid" of the process.
    actor = models.CharField(_("process or user"), max_length=255)
    detail = models.CharField(_("detail"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("secret access")
        verbose_name_plural = _("secret access log")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.name} {self.outcome}"


class KnownSecret(models.Model):
    """A secret opsdesk reads, with where and when it last resolved and a keyed fingerprint."""

    name = models.CharField(_("secret"), max_length=255, unique=True)
    required = models.BooleanField(_("required"), default=False)
    provider = models.CharField(_("provider"), max_length=50, blank=True)
    source = models.CharField(_("resolved from"), max_length=50, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Outcome.choices, blank=True)
    version = models.CharField(_("version"), max_length=255, blank=True)
    # First 8 hex digits of HMAC-SHA256(per-install key, value): tells versions apart only.
    fingerprint = models.CharField(_("fingerprint"), max_length=8, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("known secret")
        verbose_name_plural = _("secret provider and known secrets")
        ordering = ["name"]
        permissions = [("test_provider", _("Can test the secret provider connection"))]

    def __str__(self) -> str:
        return self.name
