"""Service settings, read once from the environment (`ECHOLEDGER_*`, `DATABASE_URL`)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CALIBRATION = Path(__file__).parent / "checks" / "calibration.json"


class Settings(BaseSettings):
    """Every knob of the service; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="ECHOLEDGER_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "ECHOLEDGER_DATABASE_URL"),
        description="SQLAlchemy URL (postgresql+psycopg://...). Unset: embedded PostgreSQL.",
    )
    data_dir: Path = Field(default=Path(".echoledger"), description="Blobs, index, embedded DB.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    default_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="License threshold where a catalogue's terms omit it. Unset: the "
        "calibrated `use_threshold` of the calibration file (false-positive rate <= 1 %).",
    )
    platform_fee_bps: int = Field(default=0, ge=0, le=10_000)
    dispute_review_days: int = Field(
        default=30,
        ge=1,
        description="Days a label has to release or uphold a dispute; then it is released.",
    )
    period_close_days: int = Field(
        default=5, ge=0, description="Days after a month's end at which it closes by itself."
    )
    max_charge_per_check_micros: int = Field(
        default=10_000_000, gt=0, description="A check that would charge more is refused (402)."
    )
    default_credit_limit_micros: int = Field(
        default=10_000_000_000,
        ge=0,
        description="Most an AI company may owe unless an operator set its own limit.",
    )

    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    request_body_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A request body still arriving this long after the service first reads it is cut (408)."
        ),
    )
    rate_limit_checks_per_minute: float = Field(
        default=600.0, gt=0, description="Checks one API key may submit per minute (429 above)."
    )
    rate_limit_uploads_per_minute: float = Field(
        default=300.0, gt=0, description="Track uploads one API key may make per minute."
    )
    rate_limit_burst_seconds: float = Field(
        default=10.0, gt=0, description="A key may spend this many seconds' worth at once."
    )
    max_concurrent_uploads_per_key: int = Field(
        default=8, ge=1, description="Checks (and, apart, track uploads) one key runs at once."
    )
    auth_max_failures: int = Field(
        default=20, ge=1, description="Bad API keys from one address before it is locked out."
    )
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    auth_lockout_seconds: float = Field(default=300.0, gt=0)
    min_audio_seconds: float = Field(default=2.0, gt=0)
    max_audio_seconds: float = Field(default=20 * 60.0, gt=0)
    max_check_seconds: float = Field(default=10 * 60.0, gt=0)

    embedder: Literal["spectral", "openl3"] = "spectral"
    index_factory: str = Field(
        default="auto",
        description="`auto`: chosen by segment count (Flat, then IVF+SQ8, then OPQ+IVF+PQ) and "
        "retrained in the background as the catalogue grows; or a FAISS factory string.",
    )
    index_search_params: str = ""
    index_backend: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="`faiss`: an index in each process; `milvus`: a Milvus collection "
        "(needs the `milvus` extra).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="With `milvus`: a path ending in .db runs Milvus Lite in the process; "
        "`http://host:19530` a Milvus server or cluster. Unset: milvus.db in the index directory.",
    )
    milvus_token: str = Field(default="", description="With `milvus`: `user:password` or a token.")
    milvus_index_type: Literal["AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW"] = "AUTOINDEX"
    index_ivf_from_segments: int = Field(
        default=50_000, ge=1, description="With `auto`: segments from which an IVF+SQ8 serves."
    )
    index_rerank_from_segments: int = Field(
        default=1_000_000,
        ge=1,
        description="With `auto`: segments from which 4-bit fast-scan codes re-ranked on SQ8 "
        "serve.",
    )
    index_pq_from_segments: int = Field(
        default=20_000_000, ge=1, description="With `auto`: segments from which OPQ+IVF+PQ serves."
    )
    index_sync_seconds: float = Field(default=2.0, gt=0)
    index_snapshot_seconds: float = Field(default=300.0, gt=0)

    run_worker: bool = Field(default=True, description="Run an ingestion worker inside serve.")
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_stalled_seconds: float = Field(
        default=30.0, gt=0, description="Silence after which a worker's running job is retried."
    )
    idempotency_lock_seconds: float = Field(
        default=300.0, gt=0, description="After this long, an unfinished check's key is freed."
    )
    check_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        ge=1,
        description="Checks decoding and embedding at once (CPU-bound; about one per core).",
    )
    ledger_signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key that signs ledger checkpoints (created if absent). "
        "Unset: ledger-signing.key in the data directory.",
    )
    check_audio_retention_days: int = Field(
        default=365,
        ge=0,
        description="Days a check's uploaded audio is kept (content-addressed in the blob "
        "store) so the evidence can be played; 0 keeps none.",
    )
    console_session_hours: float = Field(
        default=8.0, gt=0, description="A console sign-in lasts this long."
    )
    console_secret_file: Path | None = Field(
        default=None,
        description="Key that signs console session cookies (created if absent; replicas "
        "share it). Unset: console-session.key in the data directory.",
    )
    console_secure_cookies: bool = Field(
        default=False,
        description="Mark console cookies Secure (set it when the service is behind HTTPS).",
    )
    calibration_file: Path = Field(
        default=DEFAULT_CALIBRATION,
        description="Alignment constants and the thresholds (written by "
        "`python -m bench.attribution --calibrate`).",
    )

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str | None) -> str | None:
        """Accept plain postgresql:// URLs and pin the psycopg 3 driver."""
        if url is None or url == "":
            return None
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def use_threshold(self) -> float:
        """The license threshold catalogues get when their terms omit one."""
        if self.default_threshold is not None:
            return self.default_threshold
        return calibrated_use_threshold(self.calibration_file)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def signing_key_path(self) -> Path:
        return self.ledger_signing_key_file or self.data_dir / "ledger-signing.key"

    @property
    def console_secret_path(self) -> Path:
        return self.console_secret_file or self.data_dir / "console-session.key"

    @property
    def embedded_pg_dir(self) -> Path:
        return self.data_dir / "pg"


@lru_cache(maxsize=8)
def calibrated_use_threshold(path: Path) -> float:
    """`params.use_threshold` of a calibration file (read once per path)."""
    data = json.loads(path.read_text())
    value = data.get("params", {}).get("use_threshold") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{path}: params.use_threshold must be a number within 0..1")
    return float(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache to change them)."""
    return Settings()
