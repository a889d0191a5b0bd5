"""A worker process: hosts the agents of one system for the bench.

``python -m bench.worker --system NAME --plan JSON --env JSON`` starts the agents the plan
lists, prints ``ready {json}`` on stdout once every one of them can be reached, and runs until
its stdin closes (the bench closes it to stop the worker; if the bench dies, the pipe closes
too and the worker still exits) or it receives SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from typing import Any

from bench._plan import ProcPlan
from bench.systems import get_system
from bench.systems._base import WorkerInfo

__all__ = ["main"]

READY = "ready"


def _announce(info: WorkerInfo) -> None:
    sys.stdout.write(f"{READY} {json.dumps(info)}\n")
    sys.stdout.flush()


def _watch_stdin(on_eof: Any) -> threading.Thread:
    def watch() -> None:
        # os.read on the raw descriptor, not sys.stdin.buffer: a daemon thread blocked inside
        # the buffered reader holds its lock and makes interpreter shutdown abort.
        fd = sys.stdin.fileno()
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        finally:
            on_eof()

    thread = threading.Thread(target=watch, name="stdin-watch", daemon=True)
    thread.start()
    return thread


async def _serve_async(name: str, plan: ProcPlan, env: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _watch_stdin(lambda: loop.call_soon_threadsafe(stop.set))
    await get_system(name).serve(plan, env, _announce, stop)


def main(argv: list[str] | None = None) -> int:
    """Run one worker; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--system", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--env", default="{}")
    args = parser.parse_args(argv)
    plan = ProcPlan.from_json(json.loads(args.plan))
    env = json.loads(args.env)
    system = get_system(args.system)
    if system.blocking_worker:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        _watch_stdin(stop.set)
        system.serve_blocking(plan, env, _announce, stop)
        return 0
    import uvloop

    uvloop.run(_serve_async(args.system, plan, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
