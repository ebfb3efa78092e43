"""The trio shell: moves bytes and time around the core. Nothing here decides protocol."""

from __future__ import annotations

from .datadir import StartupError as StartupError
from .serve import RunningServer as RunningServer
from .serve import serve as serve
