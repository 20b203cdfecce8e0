"""``curvprof db upgrade``: apply the Alembic migrations to the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.params import JsonFlag, service_settings


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Database maintenance.", no_args_is_help=True)
    db.command(help="Apply all migrations (alembic upgrade head).")(upgrade)
    app.add_typer(db, name="db")


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
    from service.cli.output import print_json
    from service.store import db

    settings = service_settings(db_url=db_url, data_dir=data_dir)
    db.upgrade(settings.database_url)
    where = settings.database_url.split("@")[-1]  # no credentials in the output
    if as_json:
        print_json({"database": where, "at_head": True})
    else:
        print(f"database at head: {where}")
    return 0
