from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from imcore.config import build
from imcore.server import RunningServer, serve
from tests.helpers.core import SECRET

if TYPE_CHECKING:
    from pathlib import Path

    import trio


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, object]:
    """Settings of the `server` fixture; a test may change them before using `server`."""
    return {"port": 0, "admin_port": 0, "data_dir": tmp_path, "auth_secret": SECRET}


@pytest.fixture
async def server(nursery: trio.Nursery, settings: dict[str, object]) -> RunningServer:
    started: RunningServer = await nursery.start(serve, build(settings))
    return started
