"""/docs (Swagger UI) served from local files, so the API's documentation works offline.

FastAPI's own page loads Swagger UI from a CDN (cdn.jsdelivr.net): offline, /docs is blank. Here
/docs is FastAPI's HTML (``get_swagger_ui_html``) pointing at the files the Python package
``fastapi-offline`` ships (Swagger UI 5, which reads OpenAPI 3.1 as FastAPI writes it), mounted at
``ASSETS_URL``; without that package /docs answers 503 with the command that installs it, and
nothing is fetched from elsewhere. No /redoc: the same package's ReDoc fetches its logo from
cdn.redoc.ly (seen in headless Chromium), and /docs documents the same schema.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PACKAGE = "fastapi_offline"
ASSETS_REQUIREMENT = "fastapi-offline==1.7.7"
ASSETS_URL = "/docs-assets"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def assets_dir() -> Path | None:
    """The folder of the local Swagger UI files, or None when they are not installed."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / f).is_file() for f in FILES) else None


def missing_page(what: str) -> HTMLResponse:
    text = (f"{what} is not available offline: its files are not installed. Install them with "
            f"<code>pip install {ASSETS_REQUIREMENT}</code> (ships Swagger UI as local files) "
            "and restart the server. The API's schema is at "
            "<a href=\"openapi.json\">/openapi.json</a>.")
    return HTMLResponse(f"<!doctype html><html><head><title>{what} unavailable</title></head>"
                        f"<body><h1>{what} unavailable</h1><p>{text}</p></body></html>",
                        status_code=503)


def add_docs(app: Any, folder: Path | None = None) -> None:
    """GET /docs from local files (``assets_dir()`` unless folder is given)."""
    folder = folder or assets_dir()
    if folder is not None:
        app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    oauth2 = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        if folder is None:
            return missing_page("Swagger UI")
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # no validator badge: Swagger UI would send the schema to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})})

    @app.get(oauth2, include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
