"""Test data builders: organisations, catalogues, audio files, uploads; and a job runner."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine

from app import jobs
from app.clock import Clock
from app.config import Settings
from app.db import make_sessionmaker, transaction
from app.orgs import service as orgs
from app.orgs.models import OrgKind
from app.worker import build_job_app, build_runtime, work
from tests.audio_synth import AudioFormat, melody_track, write_audio

# Every API key the suite creates through these factories, for the log leak checks.
ISSUED_KEYS: set[str] = set()


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    kind: OrgKind
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class Tenants:
    """Creates organisations (the operator bootstrap goes straight to the database, as the CLI
    does) and catalogues through the API."""

    def __init__(self, client: TestClient, engine: Engine) -> None:
        self.client = client
        self.sessions = make_sessionmaker(engine)
        self._operator: Tenant | None = None

    def operator(self) -> Tenant:
        if self._operator is None:
            with transaction(self.sessions) as session:
                org, issued = orgs.create(session, kind=OrgKind.OPERATOR, name="ops")
                self._operator = Tenant(org.id, OrgKind.OPERATOR, issued.secret)
                ISSUED_KEYS.add(issued.secret)
        return self._operator

    def create(self, kind: OrgKind | str, name: str | None = None) -> Tenant:
        kind = OrgKind(kind)
        response = self.client.post(
            "/v1/orgs",
            json={"kind": kind.value, "name": name or f"{kind.value}-{uuid.uuid4().hex[:6]}"},
            headers=self.operator().headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        ISSUED_KEYS.add(body["api_key"]["key"])
        return Tenant(uuid.UUID(body["org"]["id"]), kind, body["api_key"]["key"])

    def label(self) -> Tenant:
        return self.create(OrgKind.LABEL)

    def ai_company(self) -> Tenant:
        return self.create(OrgKind.AI_COMPANY)

    def auditor(self) -> Tenant:
        return self.create(OrgKind.AUDITOR)

    def catalogue(self, label: Tenant, **license: Any) -> dict[str, Any]:
        terms = {"rate_per_use_micros": 1000, **license}
        response = self.client.post(
            "/v1/catalogues",
            json={"name": f"catalogue-{uuid.uuid4().hex[:6]}", "license": terms},
            headers=label.headers,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


class ManualClock:
    """A clock the test moves forward (services read it wherever they date money)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(**delta)
            return self._now

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            assert when >= self._now, "time only moves forward"
            self._now = when


def run_jobs(settings: Settings, engine: Engine, *, clock: Clock | None = None) -> None:
    """Run a real procrastinate worker until the queues are empty."""
    assert settings.database_url is not None
    runtime = build_runtime(settings, engine, **({"clock": clock} if clock else {}))
    job_app = build_job_app(settings, settings.database_url, pool_size=2)

    async def drain() -> None:
        async with job_app.open_async():
            await work(job_app, runtime, wait=False)

    asyncio.run(drain())


def run_scheduled(
    settings: Settings, engine: Engine, task_name: str, *, clock: Clock | None = None
) -> None:
    """Run a periodic task now, as its schedule would: a job in its queue, run by a real
    worker (the schedule itself runs on wall-clock minutes, which a test does not wait for)."""
    with transaction(make_sessionmaker(engine)) as session:
        jobs.defer(
            session,
            task_name=task_name,
            queue=jobs.MAINTENANCE_QUEUE,
            jobs=[(None, {"timestamp": 0})],
        )
    run_jobs(settings, engine, clock=clock)


def uses_of(client: TestClient, tenant: Tenant, check_id: str) -> list[dict[str, Any]]:
    """The uses a check recorded, as `tenant` sees them."""
    response = client.get("/v1/uses", params={"check_id": check_id}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def audio_file(
    directory: Path,
    *,
    seed: int = 0,
    seconds: float = 12.0,
    sr: int = 22050,
    fmt: AudioFormat = "WAV",
    name: str | None = None,
    **render: Any,
) -> Path:
    """A synthesised piece of music written to disk in the given format."""
    path = directory / (name or f"track-{seed}-{seconds:g}s.{fmt.lower()}")
    write_audio(path, melody_track(seed, seconds=seconds, sr=sr, **render), sr, fmt)
    return path


def upload(
    client: TestClient,
    label: Tenant,
    catalogue_id: str,
    path: Path,
    **fields: str,
) -> Response:
    """POST a track's file and form fields; returns the raw response."""
    data = {"title": path.stem, "artist": "Test Artist"} | fields
    with path.open("rb") as f:
        return client.post(
            f"/v1/catalogues/{catalogue_id}/tracks",
            files={"file": (path.name, f, "application/octet-stream")},
            data=data,
            headers=label.headers,
        )


def submit_check(
    client: TestClient,
    company: Tenant,
    path: Path,
    *,
    key: str | None = None,
    **fields: str,
) -> Response:
    """POST a generated piece for a check, with a fresh Idempotency-Key unless given."""
    headers = company.headers | {"Idempotency-Key": key or uuid.uuid4().hex}
    with path.open("rb") as f:
        return client.post(
            "/v1/checks",
            files={"file": (path.name, f, "application/octet-stream")},
            data=fields,
            headers=headers,
        )


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    """One value from a SQL query (tests read the database directly to check what was stored)."""
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)
