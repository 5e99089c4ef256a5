"""API keys never reach the logs, at the most talkative log level, whatever happens."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.config import Settings
from app.main import create_app
from tests.conftest import LogCapture, leaked_keys
from tests.factories import ISSUED_KEYS, Tenants, audio_file, submit_check, upload


def test_no_key_appears_in_debug_logs_of_a_busy_session(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    keys: set[str] = set()
    try:
        debug = settings.model_copy(update={"log_level": "DEBUG"})
        with TestClient(create_app(debug)) as client:
            tenants = Tenants(client, engine)
            label, company = tenants.label(), tenants.ai_company()
            operator = tenants.operator()
            keys |= {label.key, company.key, operator.key}
            rotated = client.post("/v1/keys", json={"name": "r"}, headers=label.headers).json()
            recovery = client.post(
                f"/v1/orgs/{label.id}/keys", json={"name": "rec"}, headers=operator.headers
            ).json()
            keys |= {rotated["key"], recovery["key"]}
            client.delete(f"/v1/keys/{rotated['id']}", headers=label.headers)
            # The revoked key, a garbled one and a wrong scheme, each refused.
            for bad in (rotated["key"], label.key + "x", label.key[:-3]):
                client.get("/v1/orgs/me", headers={"Authorization": f"Bearer {bad}"})
                keys.add(bad)
            client.get("/v1/orgs/me", headers={"Authorization": f"Basic {label.key}"})
            catalogue = tenants.catalogue(label)
            piece = audio_file(tmp_path, seconds=3.0)
            upload(client, label, catalogue["id"], piece)
            submit_check(client, company, piece, metadata='{"api_key": "oops"}')
            client.post(
                f"/v1/orgs/{company.id}/suspension",
                json={"reason": "x" * 5},
                headers=operator.headers,
            )
            client.get("/v1/orgs/me", headers=company.headers)
    finally:
        logging.getLogger().removeHandler(capture)
    assert sum("request" in line for line in capture.lines) >= 10
    assert any("auth.failed" in line for line in capture.lines)
    assert not leaked_keys(capture.lines, keys | ISSUED_KEYS)
