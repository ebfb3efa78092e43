"""The sans-I/O core: protocol codec, sessions, sequencing, conversations and their rules.

It may import only the standard library's pure modules, cbor2, sortedcontainers and jwt:
no trio, sockets, files, clocks, randomness or logging (tests/test_layers.py enforces it).
Time arrives as `now_ms`, randomness as arguments. The server package drives it.
"""

from __future__ import annotations

from .chat import Audience as Audience
from .chat import Chat as Chat
from .chat import Deliveries as Deliveries
from .chat import Outcome as Outcome
from .chat import refusal as refusal
from .codec import Codec as Codec
from .codec import Encoding as Encoding
from .errors import CloseCode as CloseCode
from .errors import ErrorCode as ErrorCode
from .errors import ImcoreError as ImcoreError
from .errors import Internal as Internal
from .errors import Unavailable as Unavailable
from .frames import Error as Error
from .frames import Event as Event
from .frames import ServerFrame as ServerFrame
from .limits import Limits as Limits
from .records import CursorRecord as CursorRecord
from .records import DeliveredRecord as DeliveredRecord
from .records import Record as Record
from .session import Close as Close
from .session import Drop as Drop
from .session import Effect as Effect
from .session import Fetch as Fetch
from .session import Opened as Opened
from .session import Publish as Publish
from .session import SendPing as SendPing
from .session import Session as Session
from .session import SessionState as SessionState
from .session import Submit as Submit
from .session import Write as Write
