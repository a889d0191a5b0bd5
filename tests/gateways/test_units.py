"""Sans-I/O parts of the gateway: status mapping, credentials, body models, settings."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from fabric.errors import (
    Cancelled,
    ConfigError,
    ConnectionLost,
    Fenced,
    InvalidSubject,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    RemoteError,
    RemoteProtocolError,
    Timeout,
)
from gateways._credentials import Credentials, Identity, bearer_token
from gateways._models import MessageIn, message_out
from gateways._server import parse_listen
from gateways._status import error_body, status_for, ws_close_code


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidSubject(), 400),
        (RemoteProtocolError(), 400),
        (NotAuthorized(), 403),
        (Timeout(), 408),
        (PayloadTooLarge(size=2, limit=1), 413),
        (RemoteError(), 502),
        (Cancelled(), 502),
        (NoResponders(), 503),
        (ConnectionLost(), 504),
        (Fenced(), 500),
    ],
)
def test_status_for(exc: Exception, status: int) -> None:
    assert status_for(exc) == status  # type: ignore[arg-type]


def test_error_body_and_close_codes() -> None:
    assert error_body("x", "m", subject=None, limit=3) == {
        "error": {"code": "x", "message": "m", "limit": 3}
    }
    assert ws_close_code(503) == 4503


def _creds(tmp_path: Path) -> Credentials:
    digest = hashlib.sha256(b"bob-secret").hexdigest()
    path = tmp_path / "auth.toml"
    path.write_text(
        '[agents.alice]\ncredential = "alice-secret"\npublish = { allow = ["svc.>"] }\n'
        f'[agents.bob]\ncredential_sha256 = "{digest}"\nsubscribe = {{ allow = ["ev.*"] }}\n'
    )
    return Credentials.from_file(path)


def test_tokens_identify_agents(tmp_path: Path) -> None:
    creds = _creds(tmp_path)
    assert creds.enforcing
    assert creds.identify("alice-secret") == Identity("alice", "alice-secret")
    assert creds.identify("bob-secret").name == "bob"
    for bad in (None, "", "alice", "bob-secret "):
        with pytest.raises(NotAuthorized):
            creds.identify(bad)


def test_permissions_come_from_the_auth_file(tmp_path: Path) -> None:
    creds = _creds(tmp_path)
    alice, bob = creds.identify("alice-secret"), creds.identify("bob-secret")
    creds.check_publish(alice, "svc.echo")
    creds.check_subscribe(bob, "ev.x")
    with pytest.raises(NotAuthorized):
        creds.check_publish(bob, "svc.echo")
    with pytest.raises(NotAuthorized):
        creds.check_subscribe(alice, "ev.x")


def test_shared_credentials_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text('[agents.a]\ncredential = "same"\n[agents.b]\ncredential = "same"\n')
    with pytest.raises(ConfigError, match="share a credential"):
        Credentials.from_file(path)


def test_open_gateway_is_one_anonymous_agent() -> None:
    creds = Credentials.open("anon")
    assert not creds.enforcing
    who = creds.identify(None)
    assert who == Identity("anon")
    creds.check_publish(who, "anything.at.all")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_message_in_payload_forms() -> None:
    assert MessageIn.model_validate({"text": "hé"}).payload() == "hé".encode()
    assert MessageIn.model_validate({"base64": base64.b64encode(b"\0\1").decode()}).payload() == (
        b"\0\1"
    )
    assert MessageIn.model_validate({"json": None}).payload() == b"null"
    assert MessageIn.model_validate({"json": {"a": 1}}).payload() == b'{"a":1}'
    assert MessageIn.model_validate({}).payload() == b""


@pytest.mark.parametrize(
    "body",
    [
        {"text": "a", "json": 1},
        {"base64": "a"},
        {"headers": {"": "v"}},
        {"headers": {"k": "v" * 5000}},
        {"extra": 1},
    ],
)
def test_message_in_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MessageIn.model_validate(body)


def test_message_out_keeps_binary_intact() -> None:
    assert message_out("s", b"ok", {})["text"] == "ok"
    out = message_out("s", memoryview(b"\xff"), {"h": "1"}, "r")
    assert out == {"subject": "s", "base64": "/w==", "headers": {"h": "1"}, "reply": "r"}


@pytest.mark.parametrize(
    ("listen", "parsed"), [("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80))]
)
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["8080", ":80", "host:", "host:99999", "host:x"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(listen)
