"""The API's documentation pages, served with no request leaving the machine.

FastAPI's own ``/docs`` loads Swagger UI from a CDN (a blank page offline or
behind a strict proxy) and ``/redoc`` loads ReDoc and Google Fonts. Here both
pages load the scripts and styles that the ``fastapi-offline`` package ships,
from this server. The pages take no API key and are not rate limited: they
hold no team's data, only the public OpenAPI document.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
# The package's data files: Swagger UI's bundle and CSS, ReDoc's standalone bundle, an icon.
_ASSETS = files("fastapi_offline") / "static"


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI on ``/docs`` and ReDoc on ``/redoc`` from local assets.

    The app must be created with ``docs_url=None, redoc_url=None`` so that
    FastAPI's CDN pages do not take these paths first.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=str(_ASSETS)), name="docs-assets")

    def local(request: Request, path: str) -> str:
        # Behind a proxy that strips a prefix, the page must ask for the prefixed URLs.
        return f"{request.scope.get('root_path', '')}{path}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=local(request, str(app.openapi_url)),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=local(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
            swagger_css_url=local(request, f"{ASSETS_URL}/swagger-ui.css"),
            swagger_favicon_url=local(request, f"{ASSETS_URL}/favicon.png"),
            # Swagger UI would otherwise send the document to an online validator.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=local(request, str(app.openapi_url)),
            title=f"{app.title} - ReDoc",
            redoc_js_url=local(request, f"{ASSETS_URL}/redoc.standalone.js"),
            redoc_favicon_url=local(request, f"{ASSETS_URL}/favicon.png"),
            with_google_fonts=False,
        )
