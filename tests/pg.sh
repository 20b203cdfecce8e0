#!/usr/bin/env bash
# Throwaway PostgreSQL for the service tests.
#   eval "$(tests/pg.sh start)"   # exports CURVPROF_TEST_PG_URL and CURVPROF_TEST_PG_DIR
#   tests/pg.sh stop "$CURVPROF_TEST_PG_DIR"
# initdb/postgres refuse to run as root: when root, they run as the `postgres` user.
set -euo pipefail
PGBIN="${PGBIN:-$(dirname "$(command -v pg_ctl || echo /usr/local/bin/pg_ctl)")}"

as_pg() {
  if [ "$(id -u)" = "0" ]; then
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

case "${1:-}" in
  start)
    dir="$(mktemp -d /tmp/curvprof-pg.XXXXXX)"
    chmod 755 "$dir"
    mkdir -p "$dir/data" "$dir/sock"
    [ "$(id -u)" = "0" ] && chown -R postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    as_pg "'$PGBIN/initdb' -D '$dir/data' -U curvprof --auth=trust -E UTF8 >'$dir/initdb.log' 2>&1"
    as_pg "'$PGBIN/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
      -o \"-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off\" start >/dev/null"
    echo "export CURVPROF_TEST_PG_URL=postgresql+psycopg://curvprof@127.0.0.1:$port/postgres"
    echo "export CURVPROF_TEST_PG_DIR=$dir"
    ;;
  stop)
    dir="${2:?usage: pg.sh stop DIR}"
    as_pg "'$PGBIN/pg_ctl' -D '$dir/data' -m immediate -w stop >/dev/null" || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
