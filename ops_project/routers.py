"""Keep opsdesk's own tables in the `default` database.

The other aliases are the product's databases (DATABASE_URL_<ALIAS>): opsdesk backs them up and
restores them, and must never migrate its own tables into them.
"""


class OpsDatabaseRouter:
    def db_for_read(self, model, **hints):
        return "default"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
