"""cache_app has no tables: one unmanaged model carries the Redis page's admin entry and permissions."""
from django.db import models
from django.utils.translation import gettext_lazy as _


class RedisServer(models.Model):
    """The Redis behind opsdesk's cache, as an admin entry; never queried (managed = False).

    `cache_app.view_redis` opens the statistics page, `cache_app.clear_cache` allows clearing the
    application's cache keys.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_redis", _("Can view Redis statistics")),
            ("clear_cache", _("Can clear the application cache")),
        ]
        verbose_name = _("Redis")
        verbose_name_plural = _("Redis")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
