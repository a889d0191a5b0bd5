"""``/docs`` (Swagger UI) and ``/redoc`` served from local files, so they work offline.

FastAPI's default pages load Swagger UI and ReDoc from a CDN: without internet access
``/docs`` is a blank page. The same assets ship in the ``fastapi-offline`` package (MIT;
Swagger UI and ReDoc are Apache-2.0 and MIT, their licence headers kept in the files); they
are mounted under ``/docs-assets`` and the pages point there.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "assets_dir", "install_docs"]

ASSETS_URL = "/docs-assets"


def assets_dir() -> Path:
    """Where the Swagger UI and ReDoc files are on this machine.

    Raises:
        ImportError: the ``fastapi-offline`` package (in the ``[gateway]`` extra) is missing.
    """
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install_docs(app: FastAPI, title: str) -> None:
    """Serve ``/docs`` and ``/redoc`` from :func:`assets_dir` (the app must be built with
    ``docs_url=None, redoc_url=None``).

    Raises:
        ImportError: as :func:`assets_dir`.
    """
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
