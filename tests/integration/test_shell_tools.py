"""fabric pub/sub/req/reply/gather and fabric bench load, run as a shell user runs them,
against a real node process."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest
from procs import Proc

pytestmark = pytest.mark.timeout(120)


async def _spawn(env: dict[str, str], *args: str, label: str = "") -> Proc:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Proc(process, label or f"fabric {args[0]}")


async def _run(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 90)
    return proc.returncode or 0, out.decode(), err.decode()


async def _finish(proc: Proc) -> tuple[int, str]:
    out, _ = await asyncio.wait_for(proc.process.communicate(), 60)
    return proc.process.returncode or 0, "\n".join(proc.lines) + "\n" + out.decode()


@pytest.fixture
def env(node, fabric_env):  # type: ignore[no-untyped-def]
    return dict(fabric_env, FABRIC_URL=node.url)


async def test_pub_reaches_sub_from_argument_and_stdin(env):
    sub = await _spawn(env, "sub", "events.shell.*", "--count", "2")
    await sub.wait_line("subscribed to events.shell.*")
    code, out, err = await _run(env, "pub", "events.shell.a", "hello")
    assert code == 0 and "published 5 B to events.shell.a" in out, err
    code, out, err = await _run(env, "pub", "events.shell.b", "-", "-H", "k=v",
                                stdin=b"from stdin")
    assert code == 0, err
    code, text = await _finish(sub)
    assert code == 0, text
    assert "[#1] events.shell.a (5 B): hello" in text
    assert "[#2] events.shell.b (10 B) k=v: from stdin" in text


async def test_req_gets_the_echo_and_reply_counts_it(env):
    reply = await _spawn(env, "reply", "svc.shell.echo", "--echo", "--count", "1")
    await reply.wait_line("serving svc.shell.echo")
    code, out, err = await _run(env, "req", "svc.shell.echo", "ping", "--timeout", "10")
    assert (code, out) == (0, "ping\n"), err
    code, text = await _finish(reply)
    assert code == 0 and "[#1] svc.shell.echo (4 B)" in text


async def test_reply_command_answers_with_its_stdout(env):
    reply = await _spawn(env, "reply", "svc.shell.upper", "--command", "tr a-z A-Z")
    try:
        await reply.wait_line("serving")
        code, out, err = await _run(env, "req", "svc.shell.upper", "-", stdin=b"shout this")
        assert (code, out) == (0, "SHOUT THIS\n"), err
    finally:
        await reply.stop()


async def test_reply_command_failure_reaches_the_requester_as_one_line(env):
    reply = await _spawn(env, "reply", "svc.shell.fails", "--command", "echo no >&2; exit 3")
    try:
        await reply.wait_line("serving")
        code, out, err = await _run(env, "req", "svc.shell.fails", "x")
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and "exited with 3" in err, err
    finally:
        await reply.stop()


async def test_req_without_responders_is_one_line_and_exit_1(env):
    code, out, err = await _run(env, "req", "svc.shell.nobody", "x", "--timeout", "5")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "NoResponders" in err
    assert "Traceback" not in err


async def test_bad_subject_and_bad_arguments_exit_2(env):
    code, _, err = await _run(env, "pub", "bad subject", "x")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = await _run(env, "reply", "svc.x", "--echo", "--text", "y")
    assert code == 2 and "exactly one of" in err


async def test_gather_prints_every_reply(env):
    replies = []
    try:
        for text in ("alpha", "beta"):
            proc = await _spawn(env, "reply", "review.shell", "--text", text, "--queue", text)
            await proc.wait_line("serving")
            replies.append(proc)
        code, out, err = await _run(env, "gather", "review.shell", "doc", "--deadline", "10")
        assert code == 0, err
        assert {"alpha", "beta"} == set(re.findall(r"^\[#\d\] reply \(\d+ B\): (\w+)$", out, re.M))
        assert "2 replies, 0 errors, 0 missing (reached 2)" in out
    finally:
        await asyncio.gather(*(p.stop() for p in replies))


async def test_bench_load_prints_an_hdr_table(env):
    reply = await _spawn(env, "reply", "svc.shell.load", "--echo")
    try:
        await reply.wait_line("serving")
        code, out, err = await _run(
            env, "bench", "load", "svc.shell.load", "--rate", "200", "--duration", "1",
            "--concurrency", "4", "--size", "128",
        )
        assert code == 0, out + err
        replies = int(re.search(r"svc\.shell\.load: (\d+) replies", out).group(1))  # type: ignore[union-attr]
        assert 150 <= replies <= 200, out  # open loop: the schedule bounds the count
        for row in ("p50", "p99", "p99.9", "max"):
            assert re.search(rf"{re.escape(row)}\s+│\s+[\d,.]+", out), out
        code, out, err = await _run(env, "bench", "load", "svc.shell.none", "--duration", "0.2")
        assert code == 1 and "NoResponders=" in out
        code, out, err = await _run(env, "bench", "load", "bad subject!", "--duration", "0.2")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        await reply.stop()


async def test_status_table_shows_the_pool_and_the_mesh(env):
    code, out, err = await _run(dict(env, COLUMNS="160"), "status")
    assert code == 0, err
    assert "shared-memory pool" in out and "in use" in out and "leases" in out
    assert "mesh: not part of a mesh" in out


async def test_ctrl_c_ends_sub_and_reply_quietly(env):
    import signal

    for args in (("sub", "events.quiet"), ("reply", "svc.quiet", "--echo")):
        proc = await _spawn(env, *args)
        await proc.wait_line("subscribed to" if args[0] == "sub" else "serving")
        proc.process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.process.communicate(), 30)
        assert proc.process.returncode == 0, err
        assert b"Traceback" not in err
