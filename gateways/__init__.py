"""Bridges for clients without the SDK: the HTTP + WebSocket gateway and WebRTC signaling.

    fabric gateway --url unix:///run/user/1000/fabric/node.sock --listen 127.0.0.1:8080

Needs the ``[gateway]`` extra (FastAPI, uvicorn); WebRTC signaling also needs ``[webrtc]``.
"""

from ._app import create_app
from ._credentials import Credentials, Identity
from ._server import parse_listen, run_gateway, serve_gateway
from ._settings import GatewaySettings
from ._webrtc_agent import WebRtcRelay, connect_webrtc

__all__ = [
    "Credentials",
    "GatewaySettings",
    "Identity",
    "WebRtcRelay",
    "connect_webrtc",
    "create_app",
    "parse_listen",
    "run_gateway",
    "serve_gateway",
]
