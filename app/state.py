"""The infrastructure one service process holds for its lifetime, and its request dependencies.

Domain objects built on top of it (the check workflow) are set on `app.state` by the lifespan
in `app.main` and have their own dependencies in their domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.blobs import BlobStore
from app.config import Settings
from app.embedding import Embedder
from app.index.backend import SegmentIndex
from app.signing import Signer


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Built by the lifespan in `app.main`; heavy objects load once."""

    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    embedder: Embedder
    index: SegmentIndex
    signer: Signer


def get_service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_signer(request: Request) -> Signer:
    return get_service(request).signer


def get_blobs(request: Request) -> BlobStore:
    return get_service(request).blobs


def get_sessions(request: Request) -> sessionmaker[Session]:
    return get_service(request).sessions


ServiceDep = Annotated[ServiceState, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
SignerDep = Annotated[Signer, Depends(get_signer)]
# For work that outlives the request's own session (a streamed export).
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
