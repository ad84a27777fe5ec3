"""The Redis page of the admin: statistics and "clear application cache" (thin over services)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from cache_app.conf import app_settings
from cache_app.exceptions import CacheUnavailable, RedisNotConfigured
from cache_app.models import RedisServer
from cache_app.services import cache_clear, redis_stats_collect

VIEW_PERMISSION = "cache_app.view_redis"
CLEAR_PERMISSION = "cache_app.clear_cache"


@admin.register(RedisServer)
class RedisServerAdmin(admin.ModelAdmin):
    """No rows to list: the changelist is the statistics page, plus a confirmation page to clear."""

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.stats_view), name="%s_%s_changelist" % info),
            path("clear/", self.admin_site.admin_view(self.clear_view), name="%s_%s_clear" % info),
        ]

    def _context(self, request: HttpRequest, title) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "can_clear": request.user.has_perm(CLEAR_PERMISSION),
        }

    def stats_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        context = self._context(request, _("Redis"))
        try:
            context["stats"] = redis_stats_collect()
        except RedisNotConfigured:
            context["not_configured"] = True
        except CacheUnavailable:
            context["unavailable"] = True
        return TemplateResponse(request, "admin/cache_app/redis_stats.html", context)

    def clear_view(self, request: HttpRequest) -> HttpResponse:
        return require_http_methods(["GET", "POST"])(self._clear_view)(request)

    def _clear_view(self, request: HttpRequest) -> HttpResponse:
        if not (request.user.has_perm(VIEW_PERMISSION) and request.user.has_perm(CLEAR_PERMISSION)):
            raise PermissionDenied
        stats_url = reverse("admin:cache_app_redisserver_changelist", current_app=self.admin_site.name)
        if request.method == "POST":
            try:
                removed = cache_clear(user=request.user, request=request)
            except RedisNotConfigured:
                self.message_user(request, _("Redis is not configured: there is no shared cache to clear."), messages.ERROR)
            except CacheUnavailable:
                self.message_user(request, _("Redis did not answer; nothing was cleared."), messages.ERROR)
            else:
                self.message_user(
                    request, _("Application cache cleared: %(count)d keys removed.") % {"count": removed}, messages.SUCCESS,
                )
            return HttpResponseRedirect(stats_url)
        context = self._context(request, _("Clear the application cache?"))
        context["stats_url"] = stats_url
        context["key_prefix"] = app_settings.CACHE_KEY_PREFIX
        return TemplateResponse(request, "admin/cache_app/clear_cache_confirmation.html", context)
