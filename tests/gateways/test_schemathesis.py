"""Property-based tests of the whole HTTP API from its OpenAPI description (schemathesis).

Every operation is driven with generated valid and invalid inputs against the real gateway
and node; the checks: no 5xx where the input is the client's fault, every status and body as
documented, invalid input refused. A catch-all responder on ``>`` answers every request, so
5xx would be a gateway bug, not "no responders".
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from gateway_support import Fabric

from sdk import Msg, connect

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

CONFIG = """
# HTTP APIs accept unknown headers; schemathesis 4.32 counts an extra header as invalid input in
# its coverage phase, and such a request may then legitimately time out (408) like any other.
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 428, 429, "5xx"]

# The coverage phase sends a valid request plus one unknown header and calls it invalid. A request
# is valid with a timeout as short as 1 ms, so such a request gets 200 when the echo beats 1 ms and
# 408 when it does not: a race, not a finding. The fuzzing phase still checks that invalid
# requests are refused on this operation.
[[operations]]
include-path = "/v1/request/{subject}"
[operations.phases.coverage.checks.negative_data_rejection]
enabled = false
"""

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path(SCHEMATHESIS).exists(), reason="schemathesis is not installed")
async def test_api_conforms_to_its_openapi_description(
    gateway: str, fabric: Fabric, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)

    async def echo(msg: Msg) -> bytes:
        return bytes(msg.data)

    async with connect("catch-all", fabric.node.url) as agent:
        await agent.serve(">", echo)
        await agent.flush()
        proc = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            f"{gateway}/openapi.json",
            # Every check runs by default; `--checks all` would override the config above.
            # A schema cannot say "a valid SDP offer" or "a valid subject", so schema-valid
            # input can still be refused with a documented 400.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--request-timeout",
            "20",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # schemathesis writes .schemathesis/ into its working directory
            env={"PATH": "/usr/bin:/bin", "SCHEMATHESIS_TELEMETRY": "false"},
        )
        out, _ = await proc.communicate()
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report
