"""The service on the Milvus backend (embedded Milvus Lite): checks attribute and pay as on
FAISS, withdrawals stop matches, and a restart resumes from what Milvus kept.

The index contract both backends keep is in tests/test_index_manager.py."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.factories import submit_check
from tests.worlds import RATE, Music, excerpt

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("milvus_lite") is None,
    reason="the milvus extra (pymilvus, milvus-lite) is not installed",
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"index_backend": "milvus"})


def test_checks_on_milvus_attribute_pay_and_stop_at_withdrawal(
    client: TestClient, world: dict[str, Any], music: Music, settings: Settings
) -> None:
    index = client.get("/readyz").json()["index"]
    assert index["factory"] == "milvus:AUTOINDEX"
    assert index["segments"] > 0
    assert (settings.index_dir / "milvus.db").exists()

    mix = excerpt(11, 3.0, 15.0, timbre="piano") + excerpt(13, 10.0, 15.0, timbre="flute")
    path = music.write("query-mix-11-13", lambda: 0.5 * mix)
    result = submit_check(client, world["company"], path).json()
    uses = {m["track_id"] for m in result["matches"] if m["is_use"]}
    assert uses == {world["tracks"][11], world["tracks"][13]}
    assert result["charge_micros"] == RATE

    withdrawn = client.delete(f"/v1/tracks/{world['tracks'][13]}", headers=world["label"].headers)
    assert withdrawn.status_code in (200, 204)
    client.app.state.service.index.sync()  # type: ignore[attr-defined]
    alone = {
        seed: music.write(f"query-alone-{seed}", lambda seed=seed: excerpt(seed, 4.0, 12.0))
        for seed in (11, 13)
    }
    kept = submit_check(client, world["company"], alone[11]).json()
    assert {m["track_id"] for m in kept["matches"] if m["is_use"]} == {world["tracks"][11]}
    gone = submit_check(client, world["company"], alone[13]).json()
    assert world["tracks"][13] not in {m["track_id"] for m in gone["matches"]}
    assert gone["charge_micros"] == 0


def test_a_restart_resumes_from_what_milvus_kept(
    client: TestClient, world: dict[str, Any], settings: Settings
) -> None:
    before = client.get("/readyz").json()["index"]
    assert before["started_from"] == "rebuild"
    client.app.state.service.index.save_snapshot()  # type: ignore[attr-defined]
    with TestClient(create_app(settings)) as restarted:
        after = restarted.get("/readyz").json()["index"]
    assert after["started_from"] == "snapshot"
    assert after["segments"] == before["segments"] > 0
