"""The page the gateway serves, driven by headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import shutil

import httpx
import pytest

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
async def test_page_joins_sends_and_sees_replies(gateway: str) -> None:
    expect = playwright_api.expect
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(gateway + "/")
            # The page subscribes to "events.>" over the WebSocket as soon as it loads. (Not to
            # ">": a plain subscriber on every subject would turn "no responders" into timeouts.)
            await expect(page.locator("#status")).to_have_text(
                "subscribed to events.>", timeout=20_000
            )

            await page.fill("#subject", "svc.echo")
            await page.fill("#text", "hello from chromium")
            await page.click("#request")
            await expect(page.locator("#reply")).to_have_text("hello from chromium")

            await page.fill("#subject", "events.browser")
            await page.fill("#text", "published by the page")
            await page.click("#publish")
            await expect(page.locator("#reply")).to_have_text("published 21 bytes")
            await expect(page.locator("#log")).to_contain_text(
                "events.browser published by the page"
            )

            # Messages from other agents show up too.
            async with httpx.AsyncClient(base_url=gateway) as c:
                r = await c.post("/v1/publish/events.outside", json={"text": "from curl"})
                assert r.status_code == 202
            await expect(page.locator("#log")).to_contain_text("events.outside from curl")

            # Errors are shown, not swallowed.
            await page.fill("#subject", "svc.nobody")
            await page.click("#request")
            await expect(page.locator("#reply")).to_contain_text("503 no_responders")
        finally:
            await browser.close()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
async def test_page_joins_over_webrtc(gateway: str) -> None:
    """The page speaks the fabric protocol itself on a data channel to the gateway."""
    expect = playwright_api.expect
    # Chromium hides host candidates behind mDNS names by default, which aiortc cannot resolve;
    # a page on a real deployment would use a STUN/TURN server instead.
    args = [*ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns"]
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(gateway + "/?transport=webrtc")
            await expect(page.locator("#status")).to_contain_text(
                "subscribed to events.> over WebRTC", timeout=30_000
            )

            await page.fill("#subject", "svc.echo")
            await page.fill("#text", "hello over a data channel")
            await page.click("#request")
            await expect(page.locator("#reply")).to_have_text("hello over a data channel")

            async with httpx.AsyncClient(base_url=gateway) as c:
                r = await c.post("/v1/publish/events.to-browser", json={"text": "from http"})
                assert r.status_code == 202
            await expect(page.locator("#log")).to_contain_text("events.to-browser from http")

            await page.fill("#subject", "svc.nobody")
            await page.click("#request")
            await expect(page.locator("#reply")).to_contain_text("no_responders")
            assert errors == []
        finally:
            await browser.close()
