"""Real processes sharing a real sealed memfd pool: the test plays the node, each child
(``shm_agent.py``) is an agent that received the segment fds over SCM_RIGHTS."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from fabric.errors import BadDescriptor
from fabric.shm import (
    Descriptor,
    PoolSettings,
    SharedRegion,
    SlotClassSpec,
    SlotPool,
    SlotState,
    create_segment,
    decode_release_batch,
    send_fds,
)

sys.path.insert(0, str(Path(__file__).parent))
from shm_agent import recv_msg, send_msg

AGENT = Path(__file__).with_name("shm_agent.py")
REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SETTINGS = PoolSettings(
    classes=(SlotClassSpec(slot_size=MIB, count=4), SlotClassSpec(slot_size=16 * MIB, count=2))
)
# Names Python or other libraries give to POSIX shared memory: none may appear.
SHM_MARKERS = ("fabric", "psm_", "mp-", "wnsm_")


def _dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _ours(names: set[str]) -> set[str]:
    # Other engineers' programs (zenoh, PostgreSQL) create /dev/shm entries concurrently:
    # judge only names ours or Python's would carry, and look at our processes directly.
    return {n for n in names if any(m in n for m in SHM_MARKERS)}


def _dev_shm_used_by(pid: int) -> list[str]:
    """Anything under /dev/shm that process ``pid`` maps or holds open."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    used = [line for line in maps if "/dev/shm/" in line]
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("/dev/shm/"):
            used.append(target)
    return used


@pytest.fixture(scope="module", autouse=True)
def nothing_left_in_dev_shm() -> Iterator[None]:
    before = _dev_shm()
    yield
    assert not _ours(_dev_shm() - before)


@dataclass
class Agent:
    session: str
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    hello: dict[str, Any]

    def call(self, **msg: Any) -> Any:
        send_msg(self.sock, msg)
        reply = recv_msg(self.sock)
        assert reply is not None, f"{self.session} closed the connection"
        return reply


@dataclass
class Node:
    """What the node does with the pool: own the fds and the SlotPool, hand fds to agents."""

    pool: SlotPool
    fds: list[int]
    region: SharedRegion
    agents: list[Agent] = field(default_factory=list)

    def spawn(self, session: str) -> Agent:
        mine, theirs = socket.socketpair()
        mine.settimeout(60)
        proc = subprocess.Popen(
            [sys.executable, str(AGENT), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        theirs.close()
        # Right after the handshake: the layout with the segment fds attached.
        send_fds(mine, msgpack.packb(self.pool.layout.to_wire()), self.fds)
        hello = recv_msg(mine)
        assert hello is not None and hello["op"] == "ready"
        agent = Agent(session, proc, mine, hello)
        self.agents.append(agent)
        return agent

    def apply_release(self, agent: Agent) -> list[bool]:
        reply = agent.call(op="release")
        return [self.pool.release(agent.session, d) for d in decode_release_batch(reply["release"])]


@pytest.fixture
def node() -> Iterator[Node]:
    pool = SlotPool.from_settings(SETTINGS)
    fds = [
        create_segment(f"fabric-test-pool-{os.getpid()}-{i}", size)
        for i, size in enumerate(pool.layout.segment_sizes)
    ]
    region = SharedRegion.attach(pool.layout, fds, close_fds=False)
    n = Node(pool, fds, region)
    yield n
    for a in n.agents:
        a.sock.close()  # EOF: a well-behaved agent exits
    for a in n.agents:
        try:
            a.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            a.proc.wait()
    region.close()
    for fd in fds:
        os.close(fd)


@pytest.mark.timeout(90)
def test_16_mib_written_once_is_read_in_place_by_four_processes(node: Node) -> None:
    before = _dev_shm()
    agents = [node.spawn(f"agent-{i}") for i in range(4)]
    payload = os.urandom(16 * MIB)
    expected = hashlib.sha256(payload).hexdigest()

    d = node.pool.allocate("producer", len(payload))
    node.region.write(d, payload)  # the one and only write
    assert node.pool.publish("producer", d, [a.session for a in agents]) == 4
    for a in agents:
        reply = a.call(op="view", desc=d.encode())
        assert reply == {"sha256": expected, "length": 16 * MIB}

    # The children read the very pages the node wrote, not copies: a byte changed now is
    # seen through views they already hold.
    node.region.writable(d)[:4] = b"LIVE"
    for a in agents:
        assert a.call(op="peek")["head"] == b"LIVE" + payload[4:16]

    # Each agent maps the memfd; none uses anything under /dev/shm, and we created nothing.
    for pid in [os.getpid()] + [a.proc.pid for a in agents]:
        assert "/memfd:fabric-test-pool-" in Path(f"/proc/{pid}/maps").read_text()
        assert _dev_shm_used_by(pid) == []
    assert not _ours(_dev_shm() - before)

    freed = [f for a in agents for f in node.apply_release(a)]
    assert freed == [False, False, False, True]
    assert node.pool.state_of(d.slot) is SlotState.FREE
    for a in agents:
        assert a.call(op="exit") == {"closed": True}


@pytest.mark.timeout(60)
def test_a_reader_cannot_resize_the_segment_under_others(node: Node) -> None:
    hostile = node.spawn("hostile")
    assert hostile.hello["probes"] == {
        "shrink": os.strerror(1),  # EPERM: F_SEAL_SHRINK
        "grow": os.strerror(1),  # EPERM: F_SEAL_GROW
        "seal_write": os.strerror(1),  # EPERM: F_SEAL_SEAL
    }
    # So the last page of the last slot is still there: touching it cannot SIGBUS.
    last = node.pool.layout.slots[-1]
    d = Descriptor(last.segment, last.index, last.offset, last.size, 1)
    with node.region.view(d) as v:
        assert len(v) == last.size
        assert v[-1] == 0  # a fresh memfd reads as zeros
    assert os.fstat(node.fds[0]).st_size == node.pool.layout.segment_sizes[0]


@pytest.mark.timeout(60)
def test_child_refuses_descriptors_outside_its_mapping(node: Node) -> None:
    agent = node.spawn("reader")
    d = node.pool.allocate("producer", 100)
    for bad in (
        replace(d, length=16 * MIB + 1),
        replace(d, offset=2**63),
        replace(d, slot=99),
        replace(d, segment=7),
        replace(d, offset=d.offset + 4096),
    ):
        assert agent.call(op="bad", desc=bad.encode()) == {"refused": "bad_descriptor"}


@pytest.mark.timeout(90)
def test_killed_agents_leases_are_reclaimed(node: Node) -> None:
    pool = node.pool
    producer, reader_b, reader_c = (node.spawn(s) for s in ("A", "B", "C"))

    # A writes a payload into a slot it was granted and publishes it to B and C.
    shared = pool.allocate("A", 3 * MIB)
    pub = Descriptor.decode(producer.call(op="write", desc=shared.encode(), fill=7)["pub"])
    assert pool.publish("A", pub, ["B", "C"]) == 2
    # A second payload goes to B alone; A starts a third and never publishes it.
    solo = pool.allocate("A", MIB)
    producer.call(op="write", desc=solo.encode(), fill=8)
    pool.publish("A", solo, ["B"])
    unpublished = pool.allocate("A", MIB)
    producer.call(op="write", desc=unpublished.encode(), fill=9)
    for d in (shared, solo):
        want = hashlib.sha256(bytes([7 if d is shared else 8]) * d.length).hexdigest()
        assert reader_b.call(op="view", desc=d.encode())["sha256"] == want
    assert reader_c.call(op="view", desc=shared.encode())["length"] == 3 * MIB

    # kill -9 the producer and B while they hold leases and mappings.
    for agent in (producer, reader_b):
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=30)
        # How the node learns: its end of the session socket reaches EOF.
        assert recv_msg(agent.sock) is None
    assert pool.drop_holder("A") == 1  # the unpublished slot
    assert pool.state_of(unpublished.slot) is SlotState.FREE
    assert pool.drop_holder("B") == 1  # the slot only B held
    assert pool.state_of(solo.slot) is SlotState.FREE
    assert pool.state_of(shared.slot) is SlotState.PUBLISHED  # C still reads it
    st = pool.stats()
    assert (st.reclaimed, st.leases, st.allocated) == (2, 1, 0)

    # The dead producer's stale descriptor is refused once its slot is reused.
    again = pool.allocate("D", MIB)
    assert again.slot in (solo.slot, unpublished.slot)
    assert again.generation == 2
    with pytest.raises(BadDescriptor):
        pool.publish("A", unpublished, ["C"])

    assert node.apply_release(reader_c) == [True]
    assert pool.state_of(shared.slot) is SlotState.FREE
