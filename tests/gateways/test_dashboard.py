"""The gateway's /dashboard in headless Chromium: live over the WebSocket, no outside assets."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
async def test_dashboard_is_live_and_self_contained(gateway: str, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    expect = playwright_api.expect
    origin = urlsplit(gateway).netloc
    stop = asyncio.Event()

    async def traffic() -> int:
        sent = 0
        async with httpx.AsyncClient(base_url=gateway, timeout=10) as c:
            while not stop.is_set() and sent < 5000:
                # publishes always pass through the node (requests between agents of one
                # host take the direct path and are counted by the agents, not the node)
                r = await c.post("/v1/publish/events.dashboard", json={"text": "load"})
                assert r.status_code == 202
                sent += 1
        return sent

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        load = asyncio.create_task(traffic())
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 860})
            fetched: list[str] = []
            errors: list[str] = []
            page.on("request", lambda req: fetched.append(req.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(gateway + "/dashboard?interval=0.5")
            await expect(page.locator("#conn-status")).to_have_text("live", timeout=20_000)
            await expect(page.locator("#node-name")).to_have_text("gw-node")
            await expect(page.locator("#graph circle.self")).to_have_attribute(
                "data-name", "gw-node"
            )
            # rates come from successive snapshots: the page moves while the node is busy
            await page.wait_for_function(
                "() => Number(document.getElementById('rate-in').dataset.value) > 0",
                timeout=20_000,
            )
            await page.wait_for_function("() => Number(document.body.dataset.updates) >= 4")
            assert int(await page.locator("#sessions").inner_text()) >= 2
            shot = Path(os.environ.get("FABRIC_DASHBOARD_SCREENSHOT") or tmp_path / "dash.png")
            png = await page.screenshot(path=str(shot))
            assert len(png) > 10_000
            assert errors == []
            # nothing but the gateway itself: the page works without internet access
            assert fetched and all(urlsplit(u).netloc == origin for u in fetched), fetched
        finally:
            stop.set()
            assert await load > 0
            await browser.close()


async def test_dashboard_socket_rejects_a_bad_interval(gateway: str) -> None:
    from websockets.asyncio.client import connect as ws_connect

    url = gateway.replace("http://", "ws://") + "/v1/dashboard?interval=0.01"
    async with ws_connect(url) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
        assert "interval must be within" in str(first)
