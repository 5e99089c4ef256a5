"""The interactive API docs (/docs, /redoc), served from assets shipped in the package.

Swagger UI and ReDoc come from the npm packages `swagger-ui-dist` 5.35.0 and `redoc` 2.5.4,
copied with their licences into `app/static/` (see the README there), so the docs load no
script from a CDN. Each page carries a Content-Security-Policy that allows scripts from this
origin and, by its hash, the one inline script Swagger UI needs to start. (ReDoc's footer asks
for its logo from a CDN; the policy blocks that, which only hides the logo.)
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _script_hashes(html: str) -> str:
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )


def _page(response: HTMLResponse, *, workers: bool = False) -> HTMLResponse:
    html = bytes(response.body).decode()
    policy = [
        "default-src 'none'",
        f"script-src 'self' {_script_hashes(html)}".rstrip(),
        "style-src 'self' 'unsafe-inline'",  # both UIs set styles inline at run time
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
    if workers:
        policy.append("worker-src 'self' blob:")  # ReDoc searches in a blob worker
    return HTMLResponse(html, headers={"Content-Security-Policy": "; ".join(policy)})


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve /docs and /redoc from the package's own copies of Swagger UI and ReDoc."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"
    swagger = _page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=favicon,
        )
    )
    redoc = _page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            redoc_js_url=f"{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        ),
        workers=True,
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return swagger

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return redoc
