"""The objects one service process holds for its lifetime, and their request dependencies."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.blobs import BlobStore
from app.checks.attribution import AttributionParams
from app.config import Settings
from app.embedding import Embedder
from app.index.manager import IndexManager
from app.ledger.appender import LedgerAppender


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Built by the lifespan in `app.main`; heavy objects load once."""

    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    embedder: Embedder
    index: IndexManager
    attribution: AttributionParams
    ledger: LedgerAppender
    # Checks are CPU-bound: at most this many decode and embed at once.
    check_slots: threading.BoundedSemaphore


def get_service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_blobs(request: Request) -> BlobStore:
    return get_service(request).blobs


ServiceDep = Annotated[ServiceState, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
