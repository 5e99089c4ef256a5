"""The API docs load everything from this service: no CDN, a tight content security policy."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from app.docs import STATIC_DIR


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_served_here(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    referenced = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", html)
    referenced += re.findall(r"""(?:url|_url)\s*:\s*['"]([^'"]+)['"]""", html)
    assert referenced
    assert not [u for u in referenced if "//" in u], referenced
    for url in referenced:
        if url.startswith("/static/"):
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    for script in re.findall(r"<script>(.*?)</script>", html, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


def test_vendored_assets_ship_with_their_licences() -> None:
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_DIR / folder / "LICENSE").read_text().strip()
    assert (STATIC_DIR / "swagger-ui" / "swagger-ui-bundle.js").stat().st_size > 500_000
    assert (STATIC_DIR / "redoc" / "redoc.standalone.js").stat().st_size > 500_000
