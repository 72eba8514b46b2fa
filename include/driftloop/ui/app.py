"""The Model health FastAPI app, mounted in Airflow's API server under :data:`PREFIX` by
``plugins/driftloop_health.py``; only the API server imports this module (on the first request).

Auth: Airflow does not protect a plugin's app, so every route depends on :func:`authenticated_user`: the
JWT of the ``Authorization: Bearer`` header or of the UI's ``_token`` cookie, validated by Airflow's own
``get_user`` (the configured auth manager's ``get_user_from_token``), then the auth manager's read access to
the website. A browser without a valid token is sent to the auth manager's login page (and back); any other
client gets 401 (no token, or an expired one) or 403 (an invalid token, or no access).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from driftloop.ui import charts, data, pages

PREFIX = "/driftloop"
_bearer = HTTPBearer(auto_error=False)
_charts_lock = threading.Lock()  # matplotlib's rc settings are process-global


class LoginRequired(Exception):
    def __init__(self, login_url: str):
        self.login_url = login_url


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def authenticated_user(request: Request,
                             bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Any:  # fmt: skip
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    try:
        user = await get_user(request, None, bearer)
    except HTTPException as error:
        if error.status_code in (401, 403) and bearer is None and _wants_html(request):
            raise LoginRequired(get_auth_manager().get_url_login(next_url=str(request.url))) from error
        raise
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="this user may not read the Airflow website")
    return user


User = Annotated[Any, Depends(authenticated_user)]


def _links(request: Request) -> pages.Links:
    base = request.scope.get("root_path", "") or PREFIX
    airflow_root = base[: -len(PREFIX)] if base.endswith(PREFIX) else ""
    return pages.Links(base, airflow_root)


def render_overview(url: str, links: pages.Links) -> str:
    with data.read_only(url) as conn:
        models = data.overview(conn)
    return pages.overview(models, links)


def render_model(url: str, name: str, links: pages.Links, days: int = data.HISTORY_DAYS) -> str | None:
    """The model's page, or None when the warehouse has no such model."""
    with data.read_only(url) as conn:
        page = data.model_page(conn, name, days)
    if page is None:
        return None
    with _charts_lock:
        drawn = charts.all_charts(page["series"], page["events"])
    return pages.model(page, drawn, links)


def create_app() -> FastAPI:
    app = FastAPI(title="driftloop: Model health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, error: LoginRequired):
        return RedirectResponse(error.login_url, status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: User) -> HTMLResponse:
        return _html(render_overview(data.warehouse_url(), _links(request)))

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str, user: User) -> HTMLResponse:
        links = _links(request)
        started = time.perf_counter()
        text = render_model(data.warehouse_url(), name, links)
        if text is None:
            return _html(pages.not_found(name, links), status_code=404)
        return _html(text, headers={"Server-Timing": f"render;dur={(time.perf_counter() - started) * 1000:.0f}"})

    return app


def _html(text: str, status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    # the page may be framed by Airflow's UI (same origin) but by no other site
    security = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                           "frame-ancestors 'self'", "Cache-Control": "no-store"}  # fmt: skip
    return HTMLResponse(text, status_code=status_code, headers={**security, **(headers or {})})
