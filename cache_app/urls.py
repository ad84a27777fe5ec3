"""Routes of cache_app (/health)."""

urlpatterns: list = []
