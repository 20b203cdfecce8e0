"""All FastAPI dependencies: settings, database session, artifact store, runner, auth.

The dependencies that do no I/O are ``async def``: FastAPI runs a sync dependency on a
worker thread, and each such hop costs a thread switch and a wait for a thread of the
pool that the endpoints need (docs/reliability.md, "The thread and pool model")."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts import ArtifactStore
from service.jobs_runner import JobRunner
from service.problems import idempotent_submission, problems
from service.settings import Settings
from service.store.job_pages import JobKey
from service.store.json_cache import RowJsonCache
from service.store.models import IDEMPOTENCY_KEY_LENGTH
from service.store.queries import LayerKey
from service.store.submit import BATCH_KEY_LENGTH
from service.upload import MinimumRate, ReceivedUpload, receive_upload


@dataclass
class Services:
    """What ``create_app`` builds at start-up; stored on ``app.state.services``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    runner: JobRunner | None
    layer_cache: RowJsonCache[LayerKey] = field(default_factory=lambda: RowJsonCache(0))
    job_cache: RowJsonCache[JobKey] = field(default_factory=lambda: RowJsonCache(0))


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def services_dependency(request: Request) -> Services:
    """:func:`get_services` as a dependency, on the event loop."""
    return get_services(request)


async def get_settings(services: Annotated[Services, Depends(services_dependency)]) -> Settings:
    return services.settings


READ_METHODS = frozenset({"GET", "HEAD"})
"""Requests that only read: their session is ``Services.read_sessions``."""


async def get_session(
    request: Request,
    services: Annotated[Services, Depends(services_dependency)],
) -> AsyncIterator[Session]:
    """A session for the endpoint function only: ``SessionDep`` closes it as the function
    returns, so its connection goes back to the pool before the response is serialised.

    A GET or HEAD gets a read session (``db.make_read_session_factory``: autocommit on a
    database server, and it refuses writes), other methods a transaction. Opened on the
    event loop (no connection is taken until the first query). Closing a read session, or
    any session on SQLite, does no I/O and runs on the loop; closing a transaction on a
    database server is a ROLLBACK round trip, which would stall the loop, so it runs on a
    thread of its own limiter, never waiting for the endpoints' threads (as FastAPI closes
    sync dependencies)."""
    reads = request.method in READ_METHODS
    session = (services.read_sessions if reads else services.sessions)()
    try:
        yield session
    finally:
        if reads or services.engine.dialect.name == "sqlite":
            session.close()
        else:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))


WireT = TypeVar("WireT")
AddUpload = Callable[[Session, ArtifactStore, ReceivedUpload, Settings], tuple[WireT, bool]]


async def accept_upload(
    request: Request,
    response: Response,
    services: Services,
    session: Session,
    add: AddUpload[WireT],
) -> WireT:
    """Stream the request's multipart upload to a temp file within the configured bounds,
    then ``add`` it to the store (``service.store.uploads``) on a worker thread; 200 rather
    than 201 when the same bytes were stored already."""
    settings = services.settings
    upload = await receive_upload(
        request,
        services.artifacts.tmp_dir,
        settings.max_upload_bytes,
        max_fields=settings.max_form_fields,
        max_field_bytes=settings.max_form_field_bytes,
        min_rate=MinimumRate(settings.upload_min_bytes_per_s, settings.upload_rate_grace_s),
    )
    stored, created = await run_in_threadpool(add, session, services.artifacts, upload, settings)
    if not created:
        response.status_code = 200
    return stored


@dataclass
class Submission:
    """What an endpoint that queues jobs needs beside its body: the services, a session,
    the request's Idempotency-Key, and the response, whose status tells a repeated request
    (200) from a new one (201)."""

    services: Services
    session: Session
    response: Response
    idempotency_key: str | None

    def answered(self, created: bool) -> None:
        """200 for a request repeated with its Idempotency-Key; else wake the runner."""
        if not created:
            self.response.status_code = 200
        elif self.services.runner is not None:
            self.services.runner.notify()


def submission_route(model: type[BaseModel]) -> dict[str, Any]:
    """The ``router.post`` arguments of an endpoint that queues jobs: 201 with ``model``, a
    write token, and the 200 of a repeated request (``problems.idempotent_submission``)."""
    return {
        "response_model": model,
        "status_code": 201,
        "dependencies": [WriteAuth],
        "responses": idempotent_submission(model),
    }


def read_route(model: Any, *problem_codes: int) -> dict[str, Any]:
    """The ``router.get`` arguments of an endpoint that answers ``model``: a read token where
    reads need one, and the problems it may answer beside the router's."""
    return {
        "response_model": model,
        "dependencies": [ReadAuth],
        "responses": problems(*problem_codes),
    }


bearer = HTTPBearer(
    auto_error=False,
    description="a token from CURVPROF_API_TOKENS; writes need one when tokens are set",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def token_ok(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> bool:
    """Constant-time comparison of the token's bytes on the wire with each configured
    token's UTF-8 bytes: any byte compares, none raises. (Starlette hands headers over as
    Latin-1 text, so encoding them back as Latin-1 gives the exact bytes sent.)"""
    if credentials is None or not credentials.credentials.strip():
        return False
    given = credentials.credentials.strip().encode("latin-1")
    found = False
    for token in settings.api_tokens:
        found |= hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))
    return found


def _unauthorized() -> HTTPException:
    return HTTPException(
        401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
    )


async def require_write(
    credentials: Credentials, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """Every write needs a bearer token when tokens are configured."""
    if settings.api_tokens and not token_ok(credentials, settings):
        raise _unauthorized()


async def require_read(
    credentials: Credentials, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """Reads are open unless ``open_reads`` is false (then they need a token too)."""
    if settings.api_tokens and not settings.open_reads and not token_ok(credentials, settings):
        raise _unauthorized()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(services_dependency)]
WriteAuth = Depends(require_write)
ReadAuth = Depends(require_read)


def submission_getter(key_length: int) -> Callable[..., Awaitable[Submission]]:
    """The dependency giving the ``Submission`` of an endpoint whose Idempotency-Key header
    is at most ``key_length`` long."""

    async def get_submission(
        response: Response,
        services: ServicesDep,
        session: SessionDep,
        # a default, not Annotated: the annotations are strings, and key_length is local
        idempotency_key: str | None = Header(None, max_length=key_length),
    ) -> Submission:
        return Submission(services, session, response, idempotency_key)

    return get_submission


JobSubmission = Annotated[Submission, Depends(submission_getter(IDEMPOTENCY_KEY_LENGTH))]
BatchSubmission = Annotated[Submission, Depends(submission_getter(BATCH_KEY_LENGTH))]
