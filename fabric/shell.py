"""Shell tools like the ``nats`` CLI: ``fabric pub``, ``sub``, ``req``, ``reply``, ``gather``.

Each command is one agent (``fabric-cli-<command>``) joining the node at ``--url`` (default:
``FABRIC_URL`` or the local node). DATA ``-`` reads the payload from stdin. Failures print one
line on stderr and exit 1 (2 for bad arguments); Ctrl-C ends ``sub`` and ``reply`` with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from .errors import FabricError, InvalidSubject

if TYPE_CHECKING:
    from sdk import Agent, Msg

__all__ = ["read_data", "register"]

err = Console(stderr=True, soft_wrap=True)

#: The longest a ``reply --command`` child may run when the request carries no deadline.
_COMMAND_TIMEOUT = 30.0

Url = Annotated[
    str | None, typer.Option(help="Node URL (default: FABRIC_URL or the local node).")
]


def read_data(data: str, stdin: Any = None) -> bytes:
    """The payload: ``-`` means all of stdin, anything else is the text itself (UTF-8)."""
    if data == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        return bytes(source.read())
    return data.encode()


def _show(msg: Msg, raw: bool, n: int) -> None:
    data = bytes(msg.data)
    if raw:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()
        return
    text = data.decode("utf-8", errors="replace")
    headers = "".join(f" {k}={v}" for k, v in sorted(msg.headers.items()))
    print(f"[#{n}] {msg.subject} ({len(data)} B){headers}: {text}", flush=True)


def _run(name: str, url: str | None, body: Callable[[Agent], Awaitable[int]]) -> None:
    """Connect, run ``body``, map errors to one line and an exit code."""
    from sdk import connect

    from .runner import install_uvloop

    async def main() -> int:
        async with connect(f"fabric-cli-{name}", url, reconnect=False) as agent:
            return await body(agent)

    install_uvloop()
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 0
    except InvalidSubject as exc:
        err.print(f"[red]fabric {name}:[/red] {exc}")
        raise typer.Exit(2) from None
    except FabricError as exc:
        err.print(f"[red]fabric {name}:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)


def _headers(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]--header needs KEY=VALUE, not {item!r}[/red]")
            raise typer.Exit(2)
        out[key] = value
    return out


HeaderOpt = Annotated[
    list[str] | None, typer.Option("--header", "-H", help="KEY=VALUE header (repeatable).")
]


def pub(
    subject: Annotated[str, typer.Argument(help="Subject to publish to.")],
    data: Annotated[str, typer.Argument(help="Payload, or - to read stdin.")] = "",
    count: Annotated[int, typer.Option(min=1, max=1_000_000, help="Publish N times.")] = 1,
    header: HeaderOpt = None,
    url: Url = None,
) -> None:
    """Publish DATA to SUBJECT."""
    payload = read_data(data)
    headers = _headers(header)

    async def body(agent: Agent) -> int:
        for _ in range(count):
            await agent.publish(subject, payload, headers=headers)
        await agent.flush()
        times = f" {count} times" if count > 1 else ""
        print(f"published {len(payload)} B to {subject}{times}", flush=True)
        return 0

    _run("pub", url, body)


def sub(
    subject: Annotated[str, typer.Argument(help="Subject pattern (* and > wildcards).")],
    queue: Annotated[str | None, typer.Option(help="Join this queue group.")] = None,
    count: Annotated[
        int, typer.Option(min=0, help="Exit after N messages (0: until Ctrl-C).")
    ] = 0,
    raw: Annotated[bool, typer.Option(help="Print only the payloads.")] = False,
    url: Url = None,
) -> None:
    """Print messages on SUBJECT as they arrive."""

    async def body(agent: Agent) -> int:
        subscription = await agent.subscribe(subject, queue)
        await agent.flush()
        if not raw:
            print(f"subscribed to {subject}" + (f" [{queue}]" if queue else ""), flush=True)
        n = 0
        async for msg in subscription:
            n += 1
            _show(msg, raw, n)
            if count and n >= count:
                break
        return 0

    _run("sub", url, body)


def req(
    subject: Annotated[str, typer.Argument(help="Subject to send the request to.")],
    data: Annotated[str, typer.Argument(help="Payload, or - to read stdin.")] = "",
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds to wait.")] = 5.0,
    header: HeaderOpt = None,
    url: Url = None,
) -> None:
    """Send a request and print the reply's payload (exit 1 on Timeout or NoResponders)."""
    payload = read_data(data)
    headers = _headers(header)

    async def body(agent: Agent) -> int:
        reply = await agent.request(subject, payload, timeout=timeout, headers=headers)
        sys.stdout.buffer.write(bytes(reply.data) + b"\n")
        sys.stdout.buffer.flush()
        return 0

    _run("req", url, body)


def reply(
    subject: Annotated[str, typer.Argument(help="Subject to answer.")],
    echo: Annotated[bool, typer.Option(help="Answer with the request's payload.")] = False,
    command: Annotated[
        str | None,
        typer.Option(help="Shell command run per request: payload on stdin, stdout answers."),
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Answer every request with this text.")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue group (default: SUBJECT).")] = None,
    count: Annotated[
        int, typer.Option(min=0, help="Exit after N requests (0: until Ctrl-C).")
    ] = 0,
    url: Url = None,
) -> None:
    """Answer requests on SUBJECT: --echo, --command CMD or --text TEXT."""
    if sum((echo, command is not None, text is not None)) != 1:
        err.print("[red]fabric reply needs exactly one of --echo, --command, --text[/red]")
        raise typer.Exit(2)

    async def answer(msg: Msg) -> bytes:
        if echo:
            return bytes(msg.data)
        if text is not None:
            return text.encode()
        assert command is not None
        left = msg.time_left()
        return await _run_command(command, bytes(msg.data), left or _COMMAND_TIMEOUT)

    async def body(agent: Agent) -> int:
        done = asyncio.Event()
        served = 0

        async def handle(msg: Msg) -> bytes:
            nonlocal served
            out = await answer(msg)
            served += 1
            print(f"[#{served}] {msg.subject} ({len(msg.data)} B)", flush=True)
            if count and served >= count:
                done.set()
            return out

        await agent.serve(subject, handle, queue=queue or subject)
        await agent.flush()
        print(f"serving {subject}", flush=True)
        await done.wait()
        await agent.flush()  # the last answer leaves before the agent closes
        return 0

    _run("reply", url, body)


async def _run_command(command: str, data: bytes, timeout: float) -> bytes:
    """Run ``sh -c command`` with ``data`` on stdin; its stdout is the answer.

    Raises:
        RuntimeError: the command failed or ran out of time (the requester gets the error).
    """
    proc = await asyncio.create_subprocess_shell(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    async def feed() -> None:
        # A command may exit without reading its input (uvloop then raises RuntimeError).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.write(data)
            await stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()

    try:
        async with asyncio.timeout(max(timeout, 0.001)):
            out, errout, _ = await asyncio.gather(proc.stdout.read(), proc.stderr.read(), feed())
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"command ran longer than {timeout:.3f}s") from None
    if proc.returncode:
        last = errout.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"command exited with {proc.returncode}: {last[0]}")
    return out


def gather(
    subject: Annotated[str, typer.Argument(help="Subject to scatter to.")],
    data: Annotated[str, typer.Argument(help="Payload, or - to read stdin.")] = "",
    quorum: Annotated[
        int | None, typer.Option(min=1, help="Return after this many replies.")
    ] = None,
    deadline: Annotated[float, typer.Option(min=0.001, help="Seconds to collect.")] = 1.5,
    url: Url = None,
) -> None:
    """Send DATA to every responder of SUBJECT and print the replies as they came."""
    payload = read_data(data)

    async def body(agent: Agent) -> int:
        result = await agent.gather(subject, payload, quorum=quorum, deadline=deadline)
        for n, msg in enumerate(result, 1):
            text = bytes(msg.data).decode("utf-8", errors="replace")
            print(f"[#{n}] reply ({len(msg.data)} B): {text}", flush=True)
        for error in result.errors:
            print(f"error: {type(error).__name__}: {error}", flush=True)
        reached = "?" if result.reached is None else str(result.reached)
        print(
            f"{len(result)} replies, {len(result.errors)} errors, {result.missing} missing "
            f"(reached {reached})",
            flush=True,
        )
        return 0 if len(result) else 1

    _run("gather", url, body)


def register(app: typer.Typer) -> None:
    """Add the shell tools to the ``fabric`` command."""
    for fn in (pub, sub, req, reply, gather):
        app.command(name=fn.__name__)(fn)


