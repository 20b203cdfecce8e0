"""``curvprof db upgrade``: apply the Alembic migrations to the configured database."""

from __future__ import annotations

import argparse
from typing import Any

from service.settings import Settings


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="database maintenance")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="apply all migrations (alembic upgrade head)")
    up.add_argument(
        "--db-url", help="database URL (default: CURVPROF_DB_URL or sqlite in data dir)"
    )
    up.add_argument("--data-dir", help="data directory (default: ./curvprof-data)")
    up.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from service.store import db

    overrides = {k: v for k, v in (("db_url", args.db_url), ("data_dir", args.data_dir)) if v}
    settings = Settings(**overrides)
    db.upgrade(settings.database_url)
    print(f"database at head: {settings.database_url.split('@')[-1]}")
    return 0
