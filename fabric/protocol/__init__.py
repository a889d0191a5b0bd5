"""The wire protocol, in one place: the header codec, stream framing, the typed control calls
and every name node, mesh and SDK must spell alike (docs/protocol.md).

Pure: no socket, task or event loop (an import-linter contract holds it to that), so the SDK
imports it as freely as the node does.
"""

from ._calls import *  # noqa: F403
from ._calls import __all__ as _calls_all
from ._codec import FieldSpec, HeaderMessage, PayloadMessage
from ._framing import *  # noqa: F403
from ._framing import __all__ as _framing_all
from ._names import *  # noqa: F403
from ._names import __all__ as _names_all
from ._wire import *  # noqa: F403
from ._wire import __all__ as _wire_all

__all__ = [
    *_wire_all,
    *_framing_all,
    *_names_all,
    *_calls_all,
    "FieldSpec",
    "HeaderMessage",
    "PayloadMessage",
]
