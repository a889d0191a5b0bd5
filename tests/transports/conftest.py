"""The conformance suite's fixture: one connected pair per ``Link`` implementation."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from link_pairs import FACTORIES, LinkPair


@pytest.fixture(params=sorted(FACTORIES))
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LinkPair]:
    if request.param == "webrtc":
        pytest.importorskip("aiortc")
    made = await FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        await made.aclose()
