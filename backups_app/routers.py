"""Keep opsdesk's own tables in one database of the project that installs it.

The other aliases a project configures are databases opsdesk backs up and restores; it must never
migrate its tables into them, nor read its records from them. A host project lists
``backups_app.routers.OpsdeskRouter`` in DATABASE_ROUTERS (docs/INSTALLING.md): the router answers
for opsdesk's apps (and the two libraries whose tables opsdesk's admin pages and schedules live in)
and leaves every other model to the host's own routers and defaults.
"""
from backups_app.access import CONTROL_DATABASE


class OpsdeskRouter:
    """Route the models of ``app_labels`` to ``CONTROL_DATABASE``; no opinion on any other model.

    ``app_labels = None`` claims every model: opsdesk's standalone project, whose only tables are
    opsdesk's (ops_project.routers.OpsDatabaseRouter).
    """

    app_labels: frozenset[str] | None = frozenset(
        {"backups_app", "secrets_app", "cache_app", "django_celery_beat", "axes"}
    )

    def _claims(self, app_label: str) -> bool:
        return self.app_labels is None or app_label in self.app_labels

    def db_for_read(self, model, **hints):
        return CONTROL_DATABASE if self._claims(model._meta.app_label) else None

    def db_for_write(self, model, **hints):
        return CONTROL_DATABASE if self._claims(model._meta.app_label) else None

    def allow_relation(self, obj1, obj2, **hints):
        # Both ours: both live in CONTROL_DATABASE. Otherwise (a backup's user, say) the host decides.
        if self._claims(obj1._meta.app_label) and self._claims(obj2._meta.app_label):
            return True
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if self._claims(app_label):
            return db == CONTROL_DATABASE
        return None
