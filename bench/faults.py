"""Faults injected into the real service, each ending in a printed verdict.

    python -m bench.faults                      # all three, about four minutes
    python -m bench.faults --only worker        # or: api, postgres

* worker: SIGKILL a standalone worker in the middle of ingesting a 10-minute track. Nothing
  of the track may be stored; a new worker must pick the job up (once the old one's
  heartbeats stop) and index it, every segment written once.
* api: SIGKILL `echoledger serve` while it works on a 9-minute check. After a restart, a retry
  with the same Idempotency-Key must complete at once (not 409 for the lock time), exactly
  once: one check, one charge, and a second retry replays it.
* postgres: a second PostgreSQL cluster that this script creates (initdb/pg_ctl from
  /usr/lib/postgresql/*/bin, as the postgres user when run as root) is stopped hard and
  started again while clients send checks. /readyz must go unready and come back, the
  service must reconnect on its own, no answer may be a 500, and every acknowledged check
  must be stored, exactly once per key, with the ledger balanced and its chain verifying.

Loopback only; every wait is bounded; exit status 1 if any verdict fails.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app import migrate
from app.db import create_db_engine, make_sessionmaker, transaction
from app.orgs import service as orgs
from app.orgs.models import OrgKind
from bench._db import scratch_database
from bench._service import _free_port, start, stop, wait_ready
from tests.audio_synth import TIMBRES, melody_track

SR = 22050
TIMEOUT_S = 180.0
Verdicts = dict[str, bool]


def _wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _music(seed: int, seconds: float) -> np.ndarray:
    """`seconds` of a 30-second synthesised piece, repeated (fast to make at any length)."""
    base = melody_track(seed, seconds=30.0, sr=SR, timbre=list(TIMBRES)[seed % len(TIMBRES)])
    return np.tile(base, int(np.ceil(seconds / 30.0)))[: int(seconds * SR)]


def _scalar(url: str, sql: str, **params: Any) -> Any:
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.text(sql), params)
    finally:
        engine.dispose()


def _wait(predicate: Callable[[], bool], *, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


class World:
    """An operator, a label with a catalogue, an AI company and an auditor, via the API."""

    def __init__(self, url: str, base: str) -> None:
        engine = create_db_engine(url, pool_size=1)
        with transaction(make_sessionmaker(engine)) as session:
            _, operator = orgs.create(session, kind=OrgKind.OPERATOR, name="faults operator")
        engine.dispose()
        self.base = base
        ops = {"Authorization": f"Bearer {operator.secret}"}
        with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:

            def key(kind: str) -> dict[str, str]:
                made = client.post("/v1/orgs", json={"kind": kind, "name": kind}, headers=ops)
                made.raise_for_status()
                return {"Authorization": f"Bearer {made.json()['api_key']['key']}"}

            self.label, self.company, self.auditor = (
                key("label"),
                key("ai_company"),
                key("auditor"),
            )
            self.catalogue = client.post(
                "/v1/catalogues",
                json={"name": "faults", "license": {"rate_per_use_micros": 1000, "threshold": 0.3}},
                headers=self.label,
            ).json()["id"]

    def upload(self, audio: np.ndarray, title: str) -> str:
        with httpx.Client(base_url=self.base, timeout=TIMEOUT_S) as client:
            response = client.post(
                f"/v1/catalogues/{self.catalogue}/tracks",
                files={"file": (f"{title}.wav", _wav(audio))},
                data={"title": title, "artist": "faults"},
                headers=self.label,
            )
            response.raise_for_status()
            return str(response.json()["id"])

    def track_status(self, track_id: str) -> str:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            return str(client.get(f"/v1/tracks/{track_id}", headers=self.label).json()["status"])

    def verify(self) -> bool:
        with httpx.Client(base_url=self.base, timeout=TIMEOUT_S) as client:
            return bool(client.get("/v1/ledger/verify", headers=self.auditor).json()["ok"])


def _report(name: str, verdicts: Verdicts, numbers: dict[str, Any]) -> bool:
    print(f"\n== {name}")
    for key, value in numbers.items():
        print(f"   {key}: {value}")
    for verdict, held in verdicts.items():
        print(f"   {'HELD' if held else 'FAILED':6} {verdict}")
    return all(verdicts.values())


def worker_killed_mid_ingestion() -> bool:
    env = {
        "ECHOLEDGER_RUN_WORKER": "false",
        "ECHOLEDGER_WORKER_HEARTBEAT_SECONDS": "1",
        "ECHOLEDGER_WORKER_STALLED_SECONDS": "5",
    }
    with (
        scratch_database("bench_faults") as url,
        tempfile.TemporaryDirectory() as data,
        tempfile.TemporaryFile(mode="w+") as log,
    ):
        api, base = start(url, Path(data), log=log, env=env)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            wait_ready(api, base, log)
            world = World(url, base)
            track = world.upload(_music(3, 600.0), "ten minutes")
            workers.append(start(url, Path(data), log=log, env=env, command="worker")[0])
            lock = f"track:{track}"
            doing = _wait(
                lambda: _scalar(
                    url, "SELECT count(*) FROM procrastinate_jobs WHERE lock = :l AND "
                    "status = 'doing'", l=lock,
                ) == 1,
                timeout=120,
                every=0.05,
            )  # fmt: skip
            time.sleep(0.5)  # well inside decoding and embedding (about 2 s for 10 minutes)
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            killed_at = time.monotonic()
            status_after_kill = world.track_status(track)
            segments_after_kill = _scalar(
                url, "SELECT count(*) FROM segments WHERE track_id = :t", t=track
            )
            workers.append(start(url, Path(data), log=log, env=env, command="worker")[0])
            indexed = _wait(lambda: world.track_status(track) == "indexed", timeout=150, every=1)
            recovered_s = time.monotonic() - killed_at
            stored = _scalar(url, "SELECT count(*) FROM segments WHERE track_id = :t", t=track)
            declared = _scalar(url, "SELECT segment_count FROM tracks WHERE id = :t", t=track)
            distinct = _scalar(
                url,
                "SELECT count(DISTINCT (embedder, embedder_version, start_s)) FROM segments "
                "WHERE track_id = :t",
                t=track,
            )
        finally:
            for worker in workers:
                if worker.poll() is None:
                    stop(worker)
            stop(api)
    return _report(
        "worker SIGKILLed mid-ingestion",
        {
            "the job was running when the worker was killed": doing,
            "nothing of the track stored after the kill": segments_after_kill == 0
            and status_after_kill == "pending",
            "a new worker retried the job and indexed the track": indexed,
            "every segment written once": stored == declared == distinct and stored > 0,
        },
        {
            "segments after the kill": segments_after_kill,
            "segments after the retry": stored,
            "kill to indexed (s)": round(recovered_s, 1),
        },
    )


def api_killed_mid_check() -> bool:
    with (
        scratch_database("bench_faults") as url,
        tempfile.TemporaryDirectory() as data,
        tempfile.TemporaryFile(mode="w+") as log,
    ):
        api, base = start(url, Path(data), log=log)
        try:
            wait_ready(api, base, log)
            world = World(url, base)
            tracks = [world.upload(_music(seed, 30.0), f"track {seed}") for seed in range(5)]
            _wait(lambda: all(world.track_status(t) == "indexed" for t in tracks), timeout=120)
            time.sleep(3)  # the index tails the new segments
            piece = _wav(_music(2, 540.0))  # nine minutes drawing on track 2
            key = f"killed-{uuid.uuid4().hex[:8]}"
            headers = world.company | {"Idempotency-Key": key}
            outcome: dict[str, Any] = {}

            def send() -> None:
                try:
                    with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:
                        files = {"file": ("piece.wav", piece)}
                        outcome["first"] = client.post("/v1/checks", files=files, headers=headers)
                except httpx.TransportError as exc:
                    outcome["first"] = type(exc).__name__

            sender = threading.Thread(target=send)
            sender.start()
            claimed = _wait(
                lambda: (
                    _scalar(url, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=key) == 1
                ),
                timeout=60,
                every=0.02,
            )
            time.sleep(0.3)  # decoding and embedding nine minutes takes a few seconds
            api.send_signal(signal.SIGKILL)
            api.wait()
            sender.join(timeout=60)
            checks_after_kill = _scalar(
                url, "SELECT count(*) FROM checks WHERE idempotency_key = :k", k=key
            )
            api, base = start(url, Path(data), log=log)
            wait_ready(api, base, log)
            restarted = time.monotonic()
            with httpx.Client(base_url=base, timeout=TIMEOUT_S) as client:
                files = {"file": ("piece.wav", piece)}
                retry = client.post("/v1/checks", files=files, headers=headers)
                retry_s = time.monotonic() - restarted
                again = client.post("/v1/checks", files=files, headers=headers)
            world.base = base
            checks = _scalar(url, "SELECT count(*) FROM checks WHERE idempotency_key = :k", k=key)
            charges = _scalar(
                url,
                "SELECT count(*) FROM ledger_transactions t JOIN checks c ON c.id = t.check_id "
                "WHERE c.idempotency_key = :k",
                k=key,
            )
            verified = world.verify()
        finally:
            if api.poll() is None:
                stop(api)
    first = outcome.get("first")
    return _report(
        "API SIGKILLed mid-check, then a retry with the same key",
        {
            "the key was claimed when the API was killed": claimed,
            "the client got no answer and nothing was recorded": not isinstance(
                first, httpx.Response
            )
            and checks_after_kill == 0,
            "the retry after restart completed at once (not 409)": retry.status_code == 201,
            "a second retry replays it": again.status_code == 201
            and again.headers.get("Idempotent-Replayed") == "true"
            and again.json() == retry.json(),
            "exactly one check and one charge for the key": checks == 1 and charges == 1,
            "the chain verifies": verified,
        },
        {
            "first attempt": first if isinstance(first, str) else first.status_code,
            "retry status": retry.status_code,
            "restart to retry answered (s)": round(retry_s, 2),
            "charge (micro-units)": retry.json().get("charge_micros"),
        },
    )


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def second_cluster() -> Iterator[tuple[str, Callable[[str], None]]]:
    """A throw-away PostgreSQL cluster on a free loopback port; yields its URL and `pg_ctl`."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="echoledger-pg-"))
    data = root / "data"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"

    def pg_ctl(action: str) -> None:
        command = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
        if action == "start":
            command += ["-o", options, "-l", str(root / "log"), "start"]
        else:
            command += ["-m", "immediate", action]
        subprocess.run(_as_postgres(command), check=True, capture_output=True)

    pg_ctl("start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", pg_ctl
    finally:
        with suppress(subprocess.CalledProcessError):
            pg_ctl("stop")
        shutil.rmtree(root, ignore_errors=True)


def postgres_restarted_under_load(*, clients: int = 6, seconds: float = 45.0) -> bool:
    with second_cluster() as (server, pg_ctl):
        url = make_url(server).set(database="faults").render_as_string(hide_password=False)
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE faults"))
        admin.dispose()
        migrate.upgrade(url)
        # The per-key rate limit would answer some of the clients' checks with 429 (tested in
        # tests/test_limits.py); here only the database's outage is under test.
        unlimited = {"ECHOLEDGER_RATE_LIMIT_CHECKS_PER_MINUTE": "1000000"}
        with tempfile.TemporaryDirectory() as data, tempfile.TemporaryFile(mode="w+") as log:
            api, base = start(url, Path(data), log=log, env=unlimited)
            try:
                wait_ready(api, base, log)
                world = World(url, base)
                tracks = [world.upload(_music(seed, 30.0), f"track {seed}") for seed in range(4)]
                _wait(lambda: all(world.track_status(t) == "indexed" for t in tracks), timeout=120)
                time.sleep(3)
                result = _load_through_a_restart(url, base, world, pg_ctl, clients, seconds)
                # Ingestion resumes too: the in-process worker reconnects on its own.
                late = world.upload(_music(9, 30.0), "after the restart")
                result["verdicts"]["a track uploaded after the restart is indexed"] = _wait(
                    lambda: world.track_status(late) == "indexed", timeout=120, every=1
                )
            finally:
                stop(api)
                log.seek(0)
                server_log = log.read()
    lines = server_log.splitlines()
    result["numbers"]["server log: warnings"] = sum("[warning" in line for line in lines)
    result["numbers"]["server log: errors"] = sum(
        "[error" in line or "[critical" in line for line in lines
    )
    if os.environ.get("ECHOLEDGER_FAULTS_LOG"):
        Path(os.environ["ECHOLEDGER_FAULTS_LOG"]).write_text(server_log)
    return _report("PostgreSQL restarted under load", result["verdicts"], result["numbers"])


def _load_through_a_restart(
    url: str,
    base: str,
    world: World,
    pg_ctl: Callable[[str], None],
    clients: int,
    seconds: float,
) -> dict[str, Any]:
    pieces = [_wav(_music(seed, 30.0)[int(5 * SR) : int(17 * SR)]) for seed in range(4)] + [
        _wav(melody_track(777, seconds=12.0, sr=SR, timbre="flute"))
    ]
    stop_at = time.monotonic() + seconds
    statuses: collections.Counter[int | str] = collections.Counter()
    acknowledged: dict[str, str] = {}  # key -> check id
    gave_up: list[str] = []
    readiness: list[tuple[float, int | str]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            i = 0
            while time.monotonic() < stop_at:
                key = f"pg-{n}-{i}"
                piece = pieces[(n + i) % len(pieces)]
                i += 1
                for _ in range(60):  # retry the same key until it is answered for good
                    try:
                        response = client.post(
                            "/v1/checks",
                            files={"file": ("piece.wav", piece)},
                            headers=world.company | {"Idempotency-Key": key},
                        )
                        status: int | str = response.status_code
                    except httpx.TransportError as exc:
                        status = type(exc).__name__
                    with lock:
                        statuses[status] += 1
                        if status == 201:
                            acknowledged[key] = response.json()["id"]
                    if status == 201:
                        break
                    time.sleep(0.5)
                else:
                    gave_up.append(key)

    def watch_readiness() -> None:
        with httpx.Client(base_url=base, timeout=5) as client:
            while time.monotonic() < stop_at + 5:
                try:
                    status: int | str = client.get("/readyz").status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                readiness.append((round(time.monotonic() - started, 2), status))
                time.sleep(0.25)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    threads.append(threading.Thread(target=watch_readiness))
    for thread in threads:
        thread.start()
    time.sleep(seconds / 4)
    down_at = time.monotonic() - started
    pg_ctl("stop")
    time.sleep(4)
    pg_ctl("start")
    up_at = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=seconds + 120)

    after = [s for t, s in readiness if t > up_at]
    unready = [t for t, s in readiness if s != 200 and t >= down_at]
    back = next((t for t, s in readiness if t > down_at and s == 200 and t > up_at), None)
    engine = create_db_engine(url, pool_size=1)
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.text(
                    "SELECT idempotency_key, id::text FROM checks WHERE idempotency_key LIKE 'pg-%'"
                )
            ).all()
        )
        per_key = conn.execute(
            sa.text(
                "SELECT c.idempotency_key, count(t.id) FROM checks c LEFT JOIN "
                "ledger_transactions t ON t.check_id = c.id GROUP BY c.idempotency_key"
            )
        ).all()
        total = conn.scalar(sa.text("SELECT coalesce(sum(amount_micros), 0) FROM ledger_postings"))
    engine.dispose()
    ok_after = sum(1 for t, s in readiness if t > up_at and s == 200)
    return {
        "verdicts": {
            "/readyz went unready during the outage": bool(unready),
            "/readyz came back on its own": back is not None and bool(after) and after[-1] == 200,
            "no 500 answer": not any(isinstance(s, int) and s == 500 for s in statuses),
            "every acknowledged check is stored, under its key": all(
                stored.get(k) == v for k, v in acknowledged.items()
            ),
            "at most one charge per key": all(n <= 1 for _, n in per_key),
            "postings sum to zero": int(total) == 0,
            "checks succeed again after the restart": ok_after > 0 and not gave_up,
            "the chain verifies": world.verify(),
        },
        "numbers": {
            "answers": dict(statuses),
            "acknowledged checks": len(acknowledged),
            "database stopped at (s)": round(down_at, 1),
            "database started at (s)": round(up_at, 1),
            "/readyz back at (s)": back,
            "unready probes": len(unready),
            "keys given up": len(gave_up),
        },
    }


SCENARIOS = {
    "worker": worker_killed_mid_ingestion,
    "api": api_killed_mid_check,
    "postgres": postgres_restarted_under_load,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args(argv)
    held = {name: SCENARIOS[name]() for name in args.only or SCENARIOS}
    print()
    for name, ok in held.items():
        print(f"{'HELD' if ok else 'FAILED':6} {name}")
    return 0 if all(held.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
