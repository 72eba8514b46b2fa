"""The Model health page in the real Airflow API server, behind the simple auth manager's login: the plugin
is mounted and listed in the nav, an unauthenticated request is refused (401, or the login page for a
browser), a logged-in user (Bearer token, or the UI's ``_token`` cookie) sees the seeded warehouse's facts,
and headless Chromium renders the page with its charts and no console error (screenshot under reports/).
The warehouse is reached through the Airflow connection ``driftloop_warehouse``, as the tasks reach it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from browser import INSTALL_HINT, Browser, chromium_path
from health_seed import seed_model

from driftloop.airflow.standalone import admin_password
from driftloop.core import warehouse
from scheduler_stack import AirflowStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[3]
SCREENSHOT = PROJECT / "reports" / "screenshots" / "model_health.png"


@pytest.fixture(scope="module")
def seeded_warehouse(admin_url):
    from conftest import drop_database, new_database

    url = new_database(admin_url)
    with psycopg.connect(url) as conn:
        seeded = seed_model(conn, "churn")
        seed_model(conn, "fraud", n_features=4, days=10, segments=(), experiment=False)
    yield url, seeded
    drop_database(admin_url, url)


@pytest.fixture(scope="module")
def api_server(seeded_warehouse, tmp_path_factory):
    url, _ = seeded_warehouse
    home = tmp_path_factory.mktemp("airflow-ui")
    password = admin_password(home)  # the simple auth manager reads the same file
    stack = AirflowStack(home, f"sqlite:///{home / 'airflow.db'}", {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW_CONN_DRIFTLOOP_WAREHOUSE": warehouse.airflow_connection_json(url),
    })  # fmt: skip
    assert "DRIFTLOOP_WAREHOUSE_URL" not in stack.env  # the page must find the warehouse through the connection
    stack.migrate()
    try:
        stack.start(components=("api-server",))
        stack.wait_until_up(timeout=600, login=("admin", password))
        yield stack
    finally:
        stack.stop()


def _get(stack: AirflowStack, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(stack.base + path, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_the_page_refuses_a_request_without_a_valid_login(api_server):
    # GIVEN the API server with the plugin and the login on
    # WHEN a client asks without a token, with a forged one, or as a browser without the UI's cookie
    no_token = _get(api_server, "/driftloop/models/churn", {"Accept": "application/json"})
    forged = _get(api_server, "/driftloop/", {"Authorization": "Bearer not-a-jwt"})
    browser = _get(api_server, "/driftloop/models/churn", {"Accept": "text/html"})
    # THEN the API answers 401 / 403 and shows nothing of the warehouse; the browser goes to the login page
    assert no_token[0] == 401 and "churn-v1-vs-v2" not in no_token[2]
    assert forged[0] == 403 and "churn-v1-vs-v2" not in forged[2]
    assert browser[0] == 303 and browser[1]["location"].startswith("/auth/login?next=")
    assert "driftloop%2Fmodels%2Fchurn" in browser[1]["location"]


def test_a_logged_in_user_sees_the_seeded_models(api_server, seeded_warehouse):
    # GIVEN the seeded warehouse (churn: champion 1, challenger 2 on 25 % in a canary; fraud: no experiment)
    _, seeded = seeded_warehouse
    bearer = {"Authorization": f"Bearer {api_server.token}"}
    # WHEN the logged-in user opens the overview and churn's page (the UI sends its JWT as the _token cookie)
    code, _, overview = _get(api_server, "/driftloop/", bearer)
    code_page, headers, page = _get(api_server, "/driftloop/models/churn", {"Cookie": f"_token={api_server.token}"})
    missing = _get(api_server, "/driftloop/models/nope", bearer)
    # THEN the overview lists both models with their status, and the page shows the warehouse's facts
    assert code == 200, overview[:2000]
    assert "/driftloop/models/churn" in overview and "/driftloop/models/fraud" in overview
    assert ">critical<" in overview and "quality_floor" not in overview  # status, not the alert text
    assert code_page == 200, page[:2000]
    for fact in ["version 1", "version 2", "25% to the challenger", seeded["experiment_id"], "canary",
                 "challenger − champion +0.0329, 90% always-valid interval [-0.0537, +0.1195]",
                 "churn quality_floor: accuracy 0.7412 &lt; 0.75", "feature_01 drifted (psi 0.37 &gt; 0.2)",
                 "/dags/promote__churn/runs/asset_triggered__2026-11-24T00%3A00%3A00",
                 "/dags/retrain__churn/runs/scheduled__2026-11-23", "Stop the experiment", "/dags/stop_experiment__churn",
                 "77%"]:  # fmt: skip
        assert fact in page, fact
    for chart in ("quality", "segments", "drift", "coverage_latency", "experiment"):
        assert f'data-chart="{chart}"' in page, chart
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert missing[0] == 404 and "No model nope" in missing[2]
    # and Airflow lists the page in its nav
    plugins = api_server.api("GET", "/plugins")["plugins"]
    views = [view for plugin in plugins for view in plugin["external_views"]]
    assert {"name": "Model health", "href": "driftloop/", "url_route": "model-health"}.items() <= next(
        view for view in views if view["name"] == "Model health").items()


def test_an_empty_model_says_what_to_do_next(api_server):
    # GIVEN fraud: no experiment, no segments, ten days of marts
    # WHEN its page is opened
    code, _, page = _get(api_server, "/driftloop/models/fraud", {"Authorization": f"Bearer {api_server.token}"})
    # THEN the sections without data say what starts them
    assert code == 200, page[:2000]
    assert "No experiment yet: a challenger that passes the offline gate starts one" in page
    assert 'data-chart="experiment"' not in page and 'data-chart="segments"' not in page
    assert 'data-chart="quality"' in page


@pytest.mark.skipif(chromium_path() is None, reason=f"no Chromium for the browser test: {INSTALL_HINT}")
def test_chromium_renders_the_page_with_its_charts_and_no_console_error(api_server):
    # GIVEN a headless Chromium holding the UI's login cookie
    with Browser(chromium_path(), width=1280, height=1000) as browser:
        browser.set_cookie("_token", api_server.token, api_server.base)
        # WHEN it loads churn's page
        response = browser.open(f"{api_server.base}/driftloop/models/churn")
        charts = browser.evaluate("""[...document.querySelectorAll('figure.chart')].map(f => ({
            name: f.dataset.chart, points: Number(f.dataset.points),
            paths: f.querySelectorAll('svg path').length, images: f.querySelectorAll('svg image').length,
            width: f.querySelector('svg') ? f.querySelector('svg').getBoundingClientRect().width : 0}))""")
        title = browser.evaluate("document.querySelector('h1').textContent")
        shot = browser.screenshot(SCREENSHOT)
        errors = browser.console_errors()
    # THEN the page rendered every chart with data, the console is clean, and the screenshot is saved
    assert response.get("status") == 200, response
    assert title.startswith("churn")
    by_name = {chart["name"]: chart for chart in charts}
    assert set(by_name) == {"quality", "segments", "drift", "coverage_latency", "experiment"}, charts
    for chart in charts:
        assert chart["points"] > 0 and chart["width"] > 300, chart
        assert chart["paths"] > 10 or chart["images"] > 0, chart  # lines, or the drift heatmap's image
    assert not errors, errors
    assert shot.stat().st_size > 50_000
    print(json.dumps({"screenshot": str(shot.relative_to(PROJECT)), "charts": charts}))


@pytest.mark.skipif(chromium_path() is None, reason=f"no Chromium for the browser test: {INSTALL_HINT}")
def test_the_nav_entry_shows_the_page_inside_airflows_ui(api_server):
    # GIVEN a logged-in headless Chromium
    with Browser(chromium_path(), width=1400, height=900) as browser:
        browser.set_cookie("_token", api_server.token, api_server.base)
        # WHEN it opens the plugin's route of Airflow's UI and follows the nav entry's iframe
        response = browser.open(f"{api_server.base}/plugin/model-health")
        rows = browser.wait_until("document.querySelector('iframe') && document.querySelector('iframe')"
                                  ".contentDocument.querySelectorAll('table tr').length > 2 && "
                                  "[...document.querySelector('iframe').contentDocument.querySelectorAll('td a')]"
                                  ".map(a => a.textContent)", timeout=120)  # fmt: skip
        nav = browser.evaluate("[...document.querySelectorAll('a[href*=\"plugin/model-health\"]')]"
                               ".map(a => a.textContent.trim())")
        errors = browser.console_errors()
    # THEN Airflow's UI frames the overview (both models), its nav has the entry, and nothing failed
    assert response.get("status") == 200, response
    assert rows == ["churn", "fraud"]
    assert "Model health" in nav, nav
    assert not errors, errors
