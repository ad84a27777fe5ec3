"""A collector module that nothing imports: cache_app's checks must look inside it (test_checks.py)."""


class EmptyCollector:
    """A Prometheus collector with no metric families."""

    def collect(self):
        return iter(())
