"""The node's /metrics and monitoring JSON, scraped from a real node process."""

from __future__ import annotations

import asyncio
import sys

import pytest
from procs import start_node

from fabric.errors import NoResponders
from metrics._scrape import get_json, http_get, scrape, start_metrics_node, value
from sdk import connect

pytestmark = pytest.mark.timeout(90)

pytest.importorskip("opentelemetry.exporter.prometheus")


async def test_counters_follow_a_known_workload(tmp_path, fabric_env):
    node, address = await start_metrics_node(tmp_path, fabric_env)
    try:
        before = await scrape(address)
        assert all(name.startswith("fabric_") for name, _ in before)
        requests = 37
        # direct=False: every request goes through the node (the direct same-host path skips
        # it by design; agents count those themselves).
        async with connect("svc", node.url, direct=False) as svc, connect(
            "caller", node.url, direct=False
        ) as caller:

            async def echo(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await svc.serve("svc.metered", echo)
            await svc.flush()
            for i in range(requests):
                reply = await caller.request("svc.metered", b"x" * 100, timeout=10)
                assert reply.data == b"x" * 100, i
            with pytest.raises(NoResponders):
                await caller.request("svc.nobody", b"", timeout=10)
            during = await scrape(address)
            assert value(during, "fabric_sessions", transport="unix") == 2
            assert value(during, "fabric_subscriptions") == 1
        after = await scrape(address)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        # N requests in, N+1 with the one nobody serves; each reply is a message too.
        assert delta("fabric_requests_total") == requests + 1
        assert delta("fabric_messages_in_total", origin="agent") == 2 * requests + 1
        assert delta("fabric_messages_out_total") == 2 * requests
        assert delta("fabric_bytes_in_total") == 2 * requests * 100
        assert delta("fabric_no_responders_total") == 1
        assert delta("fabric_frames_in_total", kind="pub") == 2 * requests + 1
        assert delta("fabric_sessions_opened_total") == 2
        assert delta("fabric_directory_lookups_total") == 0  # direct=False: none asked
        assert value(after, "fabric_pool_bytes") > 0
        # one publish in 32 is timed
        assert value(after, "fabric_hop_seconds_count") >= (2 * requests + 1) // 32
    finally:
        await node.stop()


async def test_monitoring_json_endpoints(tmp_path, fabric_env):
    node, address = await start_metrics_node(tmp_path, fabric_env)
    try:
        async with connect("watcher", node.url, direct=False) as agent:
            await agent.subscribe("events.watched", queue="q")
            await agent.flush()
            status = await get_json(address, "/status")
            assert status["node"] == "n1"
            assert status["sessions"] == 1
            assert status["pool"]["pool_bytes"] > 0
            assert set(status["latency"]) >= {"hop_seconds", "queue_depth_bytes"}
            sessions = (await get_json(address, "/sessions"))["sessions"]
            assert [s["name"] for s in sessions] == ["watcher"]
            assert sessions[0]["transport"] == "unix"
            subs = (await get_json(address, "/subscriptions"))["subscriptions"]
            assert {"agent": "watcher", "subject": "events.watched", "queue": "q"}.items() <= {
                k: v for s in subs if s["subject"] == "events.watched" for k, v in s.items()
            }.items()
            assert (await get_json(address, "/peers"))["peers"] == []
        code, _ = await http_get(address, "/nothing-here")
        assert code == 404
    finally:
        await node.stop()


async def test_peers_endpoint_lists_mesh_links(tmp_path, fabric_env):
    from mesh.conftest import cloud_toml, free_port

    cluster = {"a": f"tcp://127.0.0.1:{free_port()}", "b": f"tcp://127.0.0.1:{free_port()}"}
    nodes = []
    try:
        for name in ("a", "b"):
            path = tmp_path / f"{name}.toml"
            path.write_text(cloud_toml(name, cluster))
            nodes.append(
                await start_metrics_node(tmp_path, fabric_env, name, ["--config", str(path)])
            )
        (_, address), _ = nodes

        async def linked() -> bool:
            peers = (await get_json(address, "/peers"))["peers"]
            return [p["name"] for p in peers] == ["b"] and peers[0]["state"] == "up"

        from procs import until

        await until(linked, 30, "a's link to b")
        samples = await scrape(address)
        assert value(samples, "fabric_peer_up", peer="b", kind="cluster", site="cloud") == 1
    finally:
        await asyncio.gather(*(n.stop() for n, _ in nodes))


async def _run_node_expecting_failure(tmp_path, env, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "node", "--name", "bad",
        "--socket", str(tmp_path / "bad.sock"), *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"ready" not in out
    return proc.returncode or 0, err.decode()


async def test_metrics_port_in_use_refuses_to_start_with_one_line(tmp_path, fabric_env):
    node, address = await start_metrics_node(tmp_path, fabric_env)
    try:
        code, err = await _run_node_expecting_failure(tmp_path, fabric_env, "--metrics", address)
    finally:
        await node.stop()
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "metrics" in lines[0] and "FABRIC_METRICS" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", "bad host!:80"])
async def test_bad_metrics_address_is_one_line(tmp_path, fabric_env, bad):
    code, err = await _run_node_expecting_failure(tmp_path, fabric_env, "--metrics", bad)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "FABRIC_METRICS" in lines[0], err
    assert "Traceback" not in err


async def test_env_setting_and_scrapes_during_shutdown(tmp_path, fabric_env):
    env = dict(fabric_env, FABRIC_METRICS="127.0.0.1:0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "node", "--name", "env",
        "--socket", str(tmp_path / "env.sock"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    address = first.split("http://", 1)[1].split("/", 1)[0]
    await asyncio.wait_for(proc.stdout.readline(), 30)  # ready
    stop = asyncio.Event()

    async def hammer() -> int:
        ok = 0
        while not stop.is_set() and ok < 5000:
            try:
                code, _ = await http_get(address, "/metrics", timeout=5)
                ok += code == 200
            except (OSError, IndexError, TimeoutError):
                return ok  # the port closed: the node is gone
        return ok

    scrapers = [asyncio.create_task(hammer()) for _ in range(4)]
    await asyncio.sleep(0)
    proc.terminate()
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    stop.set()
    await asyncio.gather(*scrapers)
    assert proc.returncode == 0
    assert "Traceback" not in err.decode(), err.decode()


async def test_without_the_otel_extra_the_node_starts_and_says_what_to_install(
    tmp_path, fabric_env
):
    # A real node process whose interpreter cannot import the Prometheus exporter.
    blocker = tmp_path / "noprom"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.exporter.prometheus', 'prometheus_client')):\n"
        "            raise ImportError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = dict(fabric_env, PYTHONPATH=f"{blocker}:{fabric_env['PYTHONPATH']}")
    node, address = await start_metrics_node(tmp_path, env)
    try:
        code, body = await http_get(address, "/metrics")
        assert code == 503
        assert b"pip install 'agent-fabric[otel]'" in body
        assert (await get_json(address, "/status"))["node"] == "n1"
        async with connect("still-works", node.url) as agent:
            assert (await agent.node_status())["node"] == "n1"
    finally:
        await node.stop()


async def test_status_table_lists_mesh_peers(tmp_path, fabric_env):
    from mesh.conftest import cloud_toml, free_port
    from procs import until

    from metrics._scrape import get_json

    cluster = {"a": f"tcp://127.0.0.1:{free_port()}", "b": f"tcp://127.0.0.1:{free_port()}"}
    nodes = []
    try:
        for name in ("a", "b"):
            path = tmp_path / f"{name}.toml"
            path.write_text(cloud_toml(name, cluster))
            nodes.append(
                await start_metrics_node(tmp_path, fabric_env, name, ["--config", str(path)])
            )
        address = nodes[0][1]

        async def linked() -> bool:
            return len((await get_json(address, "/peers"))["peers"]) == 1

        await until(linked, 30, "a's link to b")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fabric", "status", "--url", nodes[0][0].url,
            env=dict(fabric_env, COLUMNS="160"), stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0
        assert "mesh (role cloud" in text
        row = next(line for line in text.splitlines() if "│ b " in line)
        assert "cluster" in row and "up" in row
    finally:
        await asyncio.gather(*(n.stop() for n, _ in nodes))


async def test_metrics_are_pushed_by_otlp_when_configured(tmp_path, fabric_env):
    from otlp_sink import OtlpSink

    sink = OtlpSink()
    await sink.start()
    env = dict(fabric_env, OTEL_METRIC_EXPORT_INTERVAL="200",
               FABRIC_METRICS_OTLP_ENDPOINT=sink.metrics_url)
    node = await start_node(tmp_path / "otlp.sock", env)  # OTLP only: no HTTP port
    try:
        assert not any("metrics on" in line for line in node.lines)
        async with connect("p", node.url) as agent:
            for _ in range(5):
                await agent.publish("events.otlp", b"12345")
            await agent.flush()

        def pushed(metrics) -> bool:  # type: ignore[no-untyped-def]
            return metrics.get("fabric_messages_in", {}).get((("origin", "agent"),)) == 5

        await sink.wait_for(pushed, 30, on="metrics")
        assert sink.metrics["fabric_bytes_in"][()] == 25
        assert all(name.startswith("fabric_") for name in sink.metrics)
    finally:
        await node.stop()
        await sink.aclose()


async def test_hostile_clients_on_the_metrics_port_do_not_stop_it(tmp_path, fabric_env):
    node, address = await start_metrics_node(tmp_path, fabric_env)
    host, port = address.rsplit(":", 1)
    try:
        # garbage, an oversized head, and a client that sends half a request and stalls
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"\x00\xff garbage\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 400")
        writer.close()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        try:
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 431")
        except ConnectionResetError:
            pass  # the node closed with our unread bytes in its buffer: the kernel sent RST
        writer.close()
        _, stalled = await asyncio.open_connection(host, int(port))
        stalled.write(b"GET /sta")
        await stalled.drain()
        assert (await get_json(address, "/status"))["node"] == "n1"  # others still served
        stalled.close()
        async with connect("after", node.url) as agent:
            assert (await agent.node_status())["node"] == "n1"
    finally:
        await node.stop()


async def test_toml_setting_turns_metrics_on(tmp_path, fabric_env):
    config = tmp_path / "node.toml"
    config.write_text('metrics = "127.0.0.1:0"\n')
    node = await start_node(tmp_path / "toml.sock", fabric_env, extra=["--config", str(config)])
    try:
        line = next(x for x in node.lines if "metrics on http://" in x)
        address = line.split("http://", 1)[1].split("/", 1)[0]
        assert (await get_json(address, "/status"))["node"] == "n1"
    finally:
        await node.stop()
