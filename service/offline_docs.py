"""Swagger UI from the installed ``swagger-ui-bundle`` package, so ``/v1/docs`` works on a
machine without internet (FastAPI's default page loads its assets from a CDN)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_SUFFIX = "-assets"


def install_offline_docs(app: FastAPI, docs_url: str) -> None:
    """``docs_url``: the Swagger UI page; ``docs_url-assets/``: its JavaScript and CSS."""
    from swagger_ui_bundle import swagger_ui_path

    assets = docs_url + ASSETS_SUFFIX
    app.mount(assets, StaticFiles(directory=swagger_ui_path), name="swagger-ui-assets")

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
        )
