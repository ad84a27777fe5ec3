"""Keep every table of the standalone project in the `default` database.

The other aliases are the product's databases (DATABASE_URL_<ALIAS>): opsdesk backs them up and
restores them, and must never migrate its own tables into them. The apps' router
(backups_app.routers) does the same for opsdesk's apps alone inside a host project; here every app
(auth, sessions, admin log...) is opsdesk's, so it claims them all.
"""
from backups_app.routers import OpsdeskRouter


class OpsDatabaseRouter(OpsdeskRouter):
    app_labels = None
