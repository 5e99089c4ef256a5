"""Without DATABASE_URL, the CLI starts an embedded PostgreSQL, migrates it and serves
(with its in-process worker), and the bulk importer uploads to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import audio_file

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_migrates_and_serves_on_embedded_postgres(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env |= {
        "ECHOLEDGER_DATA_DIR": str(tmp_path / "data"),
        "ECHOLEDGER_PORT": str(port),
        "ECHOLEDGER_LOG_FORMAT": "console",
    }
    migrated = _cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()

    created = _cli("create-org", "--kind", "operator", "--name", "ops", env=env)
    assert created.returncode == 0, created.stderr
    operator_key = created.stdout.strip()
    assert operator_key.startswith("el_operator_")

    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None, server.stderr
        assert ready.status_code == 200, ready.text
        headers = {"Authorization": f"Bearer {operator_key}"}
        label = httpx.post(
            f"{base}/v1/orgs", json={"kind": "label", "name": "indie"}, headers=headers
        )
        assert label.status_code == 201
        label_headers = {"Authorization": f"Bearer {label.json()['api_key']['key']}"}
        catalogue = httpx.post(
            f"{base}/v1/catalogues",
            json={"name": "demo", "license": {"rate_per_use_micros": 100}},
            headers=label_headers,
        ).json()

        # The bulk importer uploads a folder; the worker inside `serve` indexes it.
        folder = tmp_path / "music"
        folder.mkdir()
        for seed in (1, 2):
            audio_file(folder, seed=seed, seconds=4.0)
        imported = _cli(
            "import",
            str(folder),
            "--catalogue",
            catalogue["id"],
            "--api",
            base,
            "--key",
            label.json()["api_key"]["key"],
            env=env,
        )
        assert imported.returncode == 0, imported.stderr
        assert "uploaded 2, already there 0, failed 0" in imported.stderr
        url = f"{base}/v1/catalogues/{catalogue['id']}"
        deadline = time.monotonic() + 60
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = httpx.get(url, headers=label_headers).json()["track_counts"]
            if counts["indexed"] == 2:
                break
            time.sleep(0.3)
        assert counts["indexed"] == 2, counts
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The embedded server stops with its last user; its data stays for the next start.
    deadline = time.monotonic() + 15
    while (tmp_path / "data" / "pg" / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
