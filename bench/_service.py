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

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    database_url: str, data_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 900
) -> Iterator[str]:
    """Start `echoledger serve` on `database_url`, wait until /readyz is 200, yield its URL.

    The server's log goes to a temporary file, printed if it dies during start-up.
    """
    port = _free_port()
    full_env = (
        os.environ
        | {
            "DATABASE_URL": database_url,
            "ECHOLEDGER_DATA_DIR": str(data_dir),
            "ECHOLEDGER_PORT": str(port),
            "ECHOLEDGER_LOG_LEVEL": "WARNING",
            "ECHOLEDGER_LOG_FORMAT": "console",
        }
        | (env or {})
    )
    with tempfile.TemporaryFile(mode="w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            with httpx.Client(base_url=base, timeout=10) as client:
                while True:
                    if server.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"the server exited during start-up:\n{log.read()}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the server was not ready after {timeout} s")
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.5)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
