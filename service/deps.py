"""All FastAPI dependencies: settings, database session, artifact store, runner, auth."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.jobs_runner import JobRunner
from service.settings import Settings


@dataclass
class Services:
    """What ``create_app`` builds at start-up; stored on ``app.state.services``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    runner: JobRunner | None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_settings(services: Annotated[Services, Depends(get_services)]) -> Settings:
    return services.settings


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    session = services.sessions()
    try:
        yield session
    finally:
        session.close()


def _token_ok(request: Request, settings: Settings) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return any(hmac.compare_digest(token.strip(), t) for t in settings.api_tokens)


def require_write(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Every write needs a bearer token when tokens are configured."""
    if settings.api_tokens and not _token_ok(request, settings):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def require_read(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Reads are open unless ``open_reads`` is false (then they need a token too)."""
    if settings.api_tokens and not settings.open_reads and not _token_ok(request, settings):
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
WriteAuth = Depends(require_write)
ReadAuth = Depends(require_read)
