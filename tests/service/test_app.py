"""The app's lifespan (service/app.py): what start-up leaves alive is out of the garbage
collector's reach while the app serves, and back in it once the app stops."""

from __future__ import annotations

import gc
from collections.abc import Callable

from service.embedded import EmbeddedServer


def test_start_up_objects_are_frozen_while_the_app_serves(
    make_server: Callable[..., EmbeddedServer],
) -> None:
    server = make_server()
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imported modules, at the least
    assert server.client().jobs().items == []  # serving as usual
    server.stop()
    assert gc.get_freeze_count() == 0
