"""``curvprof serve --workers N``: N uvicorn processes on one port, each with a listening
socket of its own, so that the kernel spreads the connections evenly between them.

uvicorn's supervisor binds one socket and hands it to every worker. All workers then wait
on it, and a worker that wakes first accepts every connection queued there: 200 clients
connecting together were split 182 / 18 between two workers, so one process did nine
tenths of the work while the other idled (docs/reliability.md, "Several server
processes"). On Linux each worker instead opens its own listener with ``SO_REUSEPORT``, and
the kernel assigns each new connection to one of them by a hash of its addresses (nginx's
``reuseport``). The parent keeps a socket bound to the port, not listening, so that the port
stays reserved (and a port of 0 is resolved once) while workers come and go.

The price: when a listener closes (its worker stopped or died), the connections the kernel
had queued on it and no worker had accepted yet are reset, where a shared socket would have
kept them for another worker. Linux 5.14+ hands them to another listener instead when the
network namespace's ``net.ipv4.tcp_migrate_req`` is 1 (``deploy/docker-compose.yml`` sets
it); the server says so at start-up when it is not.

Elsewhere (no ``SO_REUSEPORT``, or not Linux, where it does not balance) the workers share
the one socket, as uvicorn does.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

BALANCES = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
MIGRATE_SETTING = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket with ``SO_REUSEPORT`` bound to ``(host, port)``, not yet listening."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class OwnListener:
    """Stands, in the parent, for the listening socket each worker opens for itself.

    uvicorn pickles a worker's sockets to start it; this one unpickles, in the worker, as a
    new ``SO_REUSEPORT`` socket bound to the parent's port. It starts listening only when
    uvicorn serves on it, after the app's start-up: a worker still importing its app or
    restarting after a crash gets no connections meanwhile (a bound socket that does not
    listen is not among those the kernel picks from)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return reuseport_socket, (self.host, self.port)


def migrates_queued_connections() -> bool:
    """Whether the kernel hands a closed listener's queued connections to another one."""
    try:
        return MIGRATE_SETTING.read_text().strip() == "1"
    except OSError:
        return False


def run(config: uvicorn.Config) -> None:
    """Serve ``config`` with ``config.workers`` processes (``uvicorn.run``'s multiprocess
    branch, with the balanced listeners)."""
    if not BALANCES:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    reserved = reuseport_socket(config.host, config.port)
    port = reserved.getsockname()[1]
    listener: Any = OwnListener(config.host, port)
    uvicorn.config.logger.info("Uvicorn running on http://%s:%d", config.host, port)
    if not migrates_queued_connections():
        uvicorn.config.logger.warning(
            "net.ipv4.tcp_migrate_req is not 1: connections queued on a worker that stops "
            "or dies are reset rather than handed to another worker"
        )
    try:
        Multiprocess(config, sockets=[listener]).run()
    finally:
        reserved.close()
