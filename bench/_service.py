"""Running the real service for benchmarks: `echoledger serve` as its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(
    database_url: str, data_dir: Path, port: int, env: dict[str, str] | None = None
) -> dict[str, str]:
    return (
        dict(os.environ)
        | {
            "DATABASE_URL": database_url,
            "ECHOLEDGER_DATA_DIR": str(data_dir),
            "ECHOLEDGER_PORT": str(port),
            "ECHOLEDGER_LOG_LEVEL": "WARNING",
            "ECHOLEDGER_LOG_FORMAT": "console",
        }
        | (env or {})
    )


def start(
    database_url: str,
    data_dir: Path,
    *,
    log: IO[str],
    env: dict[str, str] | None = None,
    port: int | None = None,
    command: str = "serve",
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `echoledger <command>` (serve by default); returns the process and its URL."""
    port = port or _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", command],
        env=service_env(database_url, data_dir, port, env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(
    process: subprocess.Popen[bytes], base: str, log: IO[str], *, timeout: float = 900
) -> None:
    """Until /readyz answers 200; raises with the server's log if it exits first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=10) as client:
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited during start-up:\n{log.read()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready after {timeout} s")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serve(
    database_url: str, data_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 900
) -> Iterator[str]:
    """Start `echoledger serve` on `database_url`, wait until /readyz is 200, yield its URL.

    The server's log goes to a temporary file, printed if it dies during start-up.
    """
    with tempfile.TemporaryFile(mode="w+") as log:
        server, base = start(database_url, data_dir, log=log, env=env)
        try:
            wait_ready(server, base, log, timeout=timeout)
            yield base
        finally:
            stop(server)
