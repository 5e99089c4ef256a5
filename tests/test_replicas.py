"""Two API replicas and two workers over one PostgreSQL database, as separate processes.

Each `echoledger serve` keeps its own FAISS index, fed from the shared segments table; the
ledger's hash chain is one in the database. The replicas share a data directory (uploaded
audio, the signing key), as they would share a volume or bucket in a deployment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.audio_synth import write_audio
from tests.factories import Tenant, Tenants, scalar
from tests.worlds import RATE, SR, Music, excerpt

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str | None = None

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]


class Cluster:
    """Starts and stops the service's processes; prints their logs when a test fails."""

    def __init__(self, database_url: str, data_dir: Path, logs: Path) -> None:
        self.env = dict(os.environ) | {
            "DATABASE_URL": database_url,
            "ECHOLEDGER_DATA_DIR": str(data_dir),
            "ECHOLEDGER_LOG_LEVEL": "WARNING",
            "ECHOLEDGER_LOG_FORMAT": "console",
            "ECHOLEDGER_RUN_WORKER": "false",
            "ECHOLEDGER_INDEX_SYNC_SECONDS": "0.2",
            "ECHOLEDGER_WORKER_HEARTBEAT_SECONDS": "0.5",
            "ECHOLEDGER_CHECK_CONCURRENCY": "1",
            # The load below comes from one address at a brisk pace.
            "ECHOLEDGER_RATE_LIMIT_CHECKS_PER_MINUTE": "100000",
        }
        self.logs = logs
        self.processes: list[Process] = []

    def start(self, command: str, name: str) -> Process:
        port = _free_port()
        log = (self.logs / f"{name}.log").open("w+b")
        popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli", command],
            env=self.env | {"ECHOLEDGER_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process = Process(
            name, popen, log, f"http://127.0.0.1:{port}" if command == "serve" else None
        )
        self.processes.append(process)
        return process

    def wait_ready(self, process: Process, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                pytest.fail(f"{process.name} exited:\n{process.output()}")
            try:
                if httpx.get(f"{process.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{process.name} was not ready after {timeout} s:\n{process.output()}")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.log.close()


@pytest.fixture
def cluster(database_url: str, engine: Engine, tmp_path: Path) -> Iterator[Cluster]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Cluster(database_url, tmp_path / "data", logs)
    try:
        yield running
    finally:
        running.stop_all()


def _wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _check(
    client: httpx.Client, company: Tenant, piece: Path, key: str | None = None
) -> httpx.Response:
    with piece.open("rb") as f:
        return client.post(
            "/v1/checks",
            files={"file": (piece.name, f, "audio/wav")},
            headers=company.headers | {"Idempotency-Key": key or uuid.uuid4().hex},
        )


def _matched(response: httpx.Response) -> set[str]:
    assert response.status_code == 201, response.text
    return {m["track_id"] for m in response.json()["matches"]}


def test_two_replicas_and_two_workers_serve_one_catalogue_and_one_ledger(
    cluster: Cluster, engine: Engine, music: Music, tmp_path: Path
) -> None:
    a = cluster.start("serve", "api-a")
    cluster.wait_ready(a)  # first alone: it creates the shared signing key
    b = cluster.start("serve", "api-b")
    workers = [cluster.start("worker", f"worker-{i}") for i in (1, 2)]
    cluster.wait_ready(b)
    assert all(w.popen.poll() is None for w in workers)
    at_a = httpx.Client(base_url=a.url or "", timeout=60)
    at_b = httpx.Client(base_url=b.url or "", timeout=60)

    tenants = Tenants(at_a, engine)  # type: ignore[arg-type]
    label = tenants.label()
    catalogue = tenants.catalogue(label, rate_per_use_micros=RATE, threshold=0.3)
    company = tenants.ai_company()
    auditor = tenants.auditor()

    # Tracks uploaded through replica A, ingested by whichever worker takes them.
    tracks: dict[int, str] = {}
    for seed in (11, 12, 13):
        with music.track(seed).open("rb") as f:
            response = at_a.post(
                f"/v1/catalogues/{catalogue['id']}/tracks",
                files={"file": (f"t{seed}.wav", f, "audio/wav")},
                data={"title": f"t{seed}", "artist": "a"},
                headers=label.headers,
            )
        assert response.status_code in (201, 202), response.text
        tracks[seed] = response.json()["id"]

    def indexed() -> bool:
        states = [
            at_b.get(f"/v1/tracks/{t}", headers=label.headers).json()["status"]
            for t in tracks.values()
        ]
        return all(s == "indexed" for s in states)

    _wait_for(indexed, timeout=180, what="both workers to index the tracks")
    assert all(w.popen.poll() is None for w in workers)

    pieces = {}
    for seed in tracks:
        pieces[seed] = tmp_path / f"piece-{seed}.wav"
        write_audio(pieces[seed], excerpt(seed, 5.0, 12.0), SR, "WAV")

    # Indexed through A's upload, matched at B (and at A): each replica's own index.
    assert tracks[11] in _matched(_check(at_b, company, pieces[11]))
    assert tracks[12] in _matched(_check(at_a, company, pieces[12]))
    assert tracks[13] in _matched(_check(at_b, company, pieces[13]))

    # A withdrawal through B stops matches at both replicas.
    assert at_b.delete(f"/v1/tracks/{tracks[11]}", headers=label.headers).status_code in (200, 204)
    assert tracks[11] not in _matched(_check(at_a, company, pieces[11]))
    assert tracks[11] not in _matched(_check(at_b, company, pieces[11]))
    assert tracks[12] in _matched(_check(at_b, company, pieces[12]))  # the others still match

    # Load through both replicas; A is killed (SIGKILL) in the middle of it. Every check a
    # client saw acknowledged (201) must be stored with its charge; a client whose request
    # died with A retries the same key at B, and gets one check, charged once.
    acknowledged: dict[str, dict[str, Any]] = {}
    retried: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def client_loop(n: int, first: httpx.Client) -> None:
        for i in range(n):
            key = uuid.uuid4().hex
            piece = pieces[12 + (i % 2)]
            target = first if not (killed.is_set() and first is at_a) else at_b
            try:
                response = _check(target, company, piece, key)
            except httpx.TransportError:
                with lock:
                    retried.append(key)
                response = _check(at_b, company, piece, key)
                while response.status_code == 409:  # A's claim, freed once A is seen dead
                    time.sleep(0.2)
                    response = _check(at_b, company, piece, key)
            if response.status_code != 201:
                with lock:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                continue
            with lock:
                acknowledged[key] = response.json()

    clients = [
        threading.Thread(target=client_loop, args=(12, at_a if i % 2 == 0 else at_b))
        for i in range(4)
    ]
    for t in clients:
        t.start()
    _wait_for(lambda: len(acknowledged) >= 6, timeout=120, what="the load to get going")
    a.popen.send_signal(signal.SIGKILL)
    a.popen.wait(10)
    killed.set()
    with lock:
        assert len(acknowledged) < 48  # killed mid-load, not after it
    for t in clients:
        t.join(300)
    assert not errors, errors
    assert len(acknowledged) == 48  # every client's every check, through one replica or other

    # Each acknowledged check is stored once, with the answer the client got.
    for key, answer in acknowledged.items():
        stored = at_b.get(f"/v1/checks/{answer['id']}", headers=company.headers)
        assert stored.status_code == 200, stored.text
        assert stored.json()["idempotency_key"] == key
        assert stored.json()["ledger_transaction_id"] == answer["ledger_transaction_id"]
        assert answer["charge_micros"] > 0
    keys = list(acknowledged)
    assert (
        scalar(engine, "SELECT count(*) FROM checks WHERE idempotency_key = ANY(:k)", k=keys) == 48
    )
    charged = {a["ledger_transaction_id"] for a in acknowledged.values()}
    assert len(charged) == 48

    # One hash chain, written by both replicas, that verifies (read through the survivor).
    verified = at_b.get("/v1/ledger/verify", headers=auditor.headers).json()
    assert verified["ok"] is True, verified
    assert verified["transactions_checked"] == scalar(
        engine, "SELECT count(*) FROM ledger_transactions"
    )
    assert verified["transactions_checked"] >= 48 + 4
    assert scalar(engine, "SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings") == 0
