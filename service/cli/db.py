"""``curvprof db upgrade``: apply the Alembic migrations to the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.params import JsonFlag, service_settings


def upgrade(
    db_url: Annotated[
        str | None,
        typer.Option(help="database URL (default: CURVPROF_DB_URL or sqlite in data dir)"),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="data directory (default: ./curvprof-data)")
    ] = None,
    as_json: JsonFlag = False,
) -> int:
    """Apply all migrations (alembic upgrade head)."""
    from service.cli.output import emit
    from service.store import db

    settings = service_settings(db_url=db_url, data_dir=data_dir)
    db.upgrade(settings.database_url)
    where = settings.database_url.split("@")[-1]  # no credentials in the output
    emit({"database": where, "at_head": True}, as_json, f"database at head: {where}")
    return 0


GROUP = typer.Typer(name="db", help="Database maintenance.", no_args_is_help=True)
GROUP.command()(upgrade)
