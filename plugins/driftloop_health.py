"""The "Model health" entry of the Airflow UI: a FastAPI app mounted in the API server at /driftloop and an
external view in the nav (shown inside the UI, next to the DAGs).

Cheap to import (the scheduler, the DAG processor and task processes load plugins too): the app behind
the mount is built on its first request, so FastAPI routes, psycopg and matplotlib load in the API server
only. What the page shows, and how it checks the Airflow login: ``driftloop.ui``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

PREFIX = "/driftloop"  # = driftloop.ui.app.PREFIX (not imported: that module imports FastAPI and the page)


class _AppOnFirstRequest:
    """An ASGI app that builds driftloop.ui.app's FastAPI app when the first request arrives."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from driftloop.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class DriftloopHealthPlugin(AirflowPlugin):
    name = "driftloop_model_health"
    fastapi_apps = [{"app": _AppOnFirstRequest(), "url_prefix": PREFIX, "name": "driftloop Model health"}]
    external_views = [{
        "name": "Model health",
        "href": f"{PREFIX.lstrip('/')}/",  # relative to the UI's base URL (works behind a path prefix)
        "destination": "nav",
        "url_route": "model-health",  # shown in an iframe inside the UI
    }]  # fmt: skip
