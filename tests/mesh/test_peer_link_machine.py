"""The peer-link lifecycle machine of two nodes, driven over a simulated network by hypothesis.

Each node is a ``PeerLinkMachine`` and a few lines of driver (what ``Mesh`` does with the
actions). Links are pipes with frames in flight both ways; hypothesis picks what happens next:
a node dials (both may), a frame arrives on one link before another (a REFUSE before the
WELCOME of the kept link, crossing refusals), the clock moves, requests and interest changes
are forwarded meanwhile, a link dies, a node restarts under the same name (its ZeroMQ dialers'
peers reconnect to the new process by themselves, or its TCP links close).

What must hold:
- nothing is delivered twice, ever;
- interest is never rolled back (a late frame of a superseded link);
- with no fault (no killed link, no restart, no timer ran out): no peer is ever dropped, so no
  request meets "no responders", and every request and reply forwarded is delivered once all
  frames in flight have arrived, with no timer needed;
- after faults, once the network is quiet the two nodes agree on one link and it works.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fabric.mesh._peer import LinkState, PeerLinkState
from fabric.mesh._peer_link import (
    DUPLICATE,
    NO_HANDSHAKE,
    Action,
    Close,
    Flush,
    Frame,
    PeerDown,
    PeerLinkMachine,
    PeerSwitched,
    PeerUp,
    Ping,
    SendRefuse,
    SendWelcome,
    Verdict,
)
from fabric.mesh._protocol import PeerInfo
from fabric.mesh._strategy import PeerKind, Role

NAMES = ("a", "b")
HEARTBEAT = 0.5
DEAD_AFTER = 2.0
HANDSHAKE = 3.0

Msg = tuple[Any, ...]


def other(name: str) -> str:
    return "b" if name == "a" else "a"


@dataclass(eq=False)
class Pipe:
    """One transport link between the nodes: each end, and the frames in flight each way."""

    dialer: str
    zmq: bool
    ends: dict[str, PeerLinkState | None]
    to: dict[str, deque[Msg]] = field(default_factory=lambda: {n: deque() for n in NAMES})
    #: That node closed its end (or its process died).
    closed: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(NAMES, False))
    #: The close of the other end reaches this node once the frames before it have.
    eof: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(NAMES, False))


@dataclass(eq=False)
class Node:
    name: str
    boot: str
    machine: PeerLinkMachine[Msg]
    pipes: dict[int, Pipe] = field(default_factory=dict)
    #: The other node's interest version as known here (None: not heard since it came up).
    view: int | None = None
    version: int = 0
    #: The dial loop's last link (None: it has not dialled yet).
    dialing: PeerLinkState | None = None

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.name, "cloud", Role.CLOUD, {}, self.boot)


def _machine(name: str) -> PeerLinkMachine[Msg]:
    return PeerLinkMachine(
        name,
        handshake_s=HANDSHAKE,
        dead_after_s=DEAD_AFTER,
        drain_s=DEAD_AFTER,
        switch_s=DEAD_AFTER,
    )


class TwoNodes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.pipes: list[Pipe] = []
        self.nodes: dict[str, Node] = {}
        self.seeds: set[str] = set()
        self.chaos = False
        self.busy = False
        self.boots = True
        self.zmq = False
        self.faults = 0
        #: A ZeroMQ link lost frames in flight and lived on (libzmq reconnected by itself).
        self.lossy = False
        self.restarts = dict.fromkeys(NAMES, 0)
        self.seq = 0
        #: Every message a node forwarded (sent on a link or held for one).
        self.accepted: set[Msg] = set()
        self.delivered: set[Msg] = set()

    # -- set-up ---------------------------------------------------------------------------

    @initialize(
        seeds=st.sampled_from(["ab", "ab", "a", "b"]),  # both dial, mostly
        zmq=st.booleans(),
        boots=st.booleans(),
        chaos=st.booleans(),
    )
    def setup(self, seeds: str, zmq: bool, boots: bool, chaos: bool = False) -> None:
        # Half the runs have no killed link and no restart: only they can check that nothing
        # is lost and nobody dropped (a run with faults checks that the nodes recover).
        self.chaos = chaos
        # A request each way between any two arrivals: every ordering of the handshake and
        # the switch has traffic in it (the ``request`` rule adds more, when it likes).
        self.busy = True
        self.seeds = set(seeds)
        self.zmq = zmq
        self.boots = boots
        for name in NAMES:
            self.nodes[name] = self._fresh(name)
        for name in sorted(self.seeds):
            self._dial(self.nodes[name])  # a dial loop dials as the node starts

    def _fresh(self, name: str) -> Node:
        boot = f"{name}.{self.restarts[name]}" if self.boots else ""
        return Node(name, boot, _machine(name))

    # -- the driver (what Mesh does with the machine's actions) ---------------------------

    def _send(self, node: Node, link: PeerLinkState, frame: Msg) -> None:
        pipe = node.pipes[link.id]
        if not pipe.closed[node.name]:
            pipe.to[other(node.name)].append(frame)

    def _run(self, node: Node, actions: list[Action[Msg]]) -> None:
        for action in actions:
            match action:
                case PeerUp(_name, link, _info, _kind):
                    assert node.view is None
                    self._send(node, link, ("interest", node.version, True))
                case PeerSwitched(_name, link, _info):
                    self._send(node, link, ("interest", node.version, True))
                case Flush(link, frames):
                    for frame in frames:
                        self._send(node, link, frame)
                case PeerDown(_name, why):
                    assert self.faults, f"{node.name} dropped its peer ({why}) with no fault"
                    node.view = None
                case SendWelcome(link):
                    self._send(node, link, ("welcome", node.info))
                case SendRefuse(link, reason):
                    self._send(node, link, ("refuse", reason))
                case Ping(link, seq):
                    self._send(node, link, ("ping", seq))
                case Close(link):
                    self._close(node, node.pipes[link.id])

    def _close(self, node: Node, pipe: Pipe) -> None:
        pipe.closed[node.name] = True
        if not pipe.zmq:
            pipe.eof[other(node.name)] = True  # a TCP close reaches the peer after the data

    def _forward(self, node: Node, msg: Msg) -> bool:
        """``Mesh._send_peer``: on the peer's link when it is up, held while it switches."""
        link = node.machine.current(other(node.name))
        if link is None:
            return False
        if link.state is LinkState.UP:
            self._send(node, link, ("pub", msg))
            ok = True
        else:
            ok = node.machine.hold(other(node.name), ("pub", msg))
        if ok:
            self.accepted.add(msg)
        return ok

    def _arrive(self, pipe: Pipe, to: str) -> None:
        """The next thing in flight on ``pipe`` towards ``to`` arrives."""
        node = self.nodes[to]
        queue = pipe.to[to]
        if not queue:
            pipe.eof[to] = False
            end = pipe.ends[to]
            if end is not None and not pipe.closed[to]:
                self._run(node, node.machine.transport_lost(end, self.now))
            return
        frame = queue.popleft()
        if pipe.closed[to]:
            if not (pipe.zmq and pipe.dialer != to):
                return
            # A ZeroMQ listener that forgot this peer: the next frame opens a new end there.
            pipe.closed[to] = False
            pipe.ends[to] = None
        end = pipe.ends[to]
        if end is None:
            end = pipe.ends[to] = node.machine.open(False, self.now)
            node.pipes[end.id] = pipe
        self._handle(node, end, frame)

    def _handle(self, node: Node, end: PeerLinkState, frame: Msg) -> None:
        machine, now = node.machine, self.now
        what = frame[0]
        if what == "hello":
            self._run(node, machine.hello(end, frame[1], PeerKind.CLUSTER, now))
        elif what == "welcome":
            self._run(node, machine.welcome(end, frame[1], PeerKind.CLUSTER, now))
        elif what == "refuse":
            self._run(node, machine.refused(end, frame[1], now))
        else:
            kind = {
                "interest": Frame.INTEREST,
                "pub": Frame.PUB,
                "ping": Frame.PING,
                "pong": Frame.PONG,
            }[what]
            verdict = machine.admit(end, kind, now)
            if verdict is Verdict.EARLY:
                self._run(node, machine.reject(end, NO_HANDSHAKE, now))
            elif verdict is Verdict.TAKE:
                self._take(node, end, frame)

    def _take(self, node: Node, end: PeerLinkState, frame: Msg) -> None:
        what = frame[0]
        if what == "interest":
            assert end.state is LinkState.UP, "interest applied from a link that is not live"
            if node.view is not None:
                assert frame[1] >= node.view, "interest rolled back by an older frame"
            node.view = frame[1]
        elif what == "pub":
            msg = frame[1]
            assert msg not in self.delivered, f"{msg} delivered twice"
            self.delivered.add(msg)
            if msg[0] == "req":
                self._forward(node, ("rep", msg))
        elif what == "ping":
            self._send(node, end, ("pong", frame[1]))
        elif what == "pong":
            end.pong(frame[1], self.now)

    def _may_dial(self, node: Node) -> bool:
        """``Mesh._dial_loop``: dial at start, then again only as the machine allows."""
        if node.name not in self.seeds:
            return False
        return node.dialing is None or node.machine.may_redial(node.dialing)

    def _dial(self, node: Node) -> None:
        link = node.machine.open(True, self.now)
        pipe = Pipe(node.name, self.zmq, {node.name: link, other(node.name): None})
        self.pipes.append(pipe)
        node.pipes[link.id] = pipe
        node.dialing = link
        self._send(node, link, ("hello", node.info))

    def _in_flight(self) -> list[tuple[Pipe, str]]:
        return [
            (pipe, to)
            for pipe in self.pipes
            for to in NAMES
            if pipe.to[to] or (pipe.eof[to] and not pipe.closed[to])
        ]

    def _tick(self, dt: float) -> None:
        self.now += dt
        for node in self.nodes.values():
            actions = node.machine.tick(self.now)
            if any(not isinstance(a, Ping) for a in actions):
                self.faults += 1  # a timer ran out: a delay this long is a fault
            self._run(node, actions)

    # -- rules ----------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def dial(self, name: str) -> None:
        node = self.nodes[name]
        if self._may_dial(node):
            self._dial(node)

    @precondition(lambda self: self.zmq)
    @rule(name=st.sampled_from(NAMES))
    def repeat_hello(self, name: str) -> None:
        """A ZeroMQ dialer sends HELLO again while it waits for the WELCOME."""
        node = self.nodes[name]
        link = node.dialing
        if link is not None and link.state is LinkState.HANDSHAKE:
            self._send(node, link, ("hello", node.info))

    @rule(data=st.data(), count=st.integers(1, 6))
    def arrive(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            flying = self._in_flight()
            if not flying:
                return
            pipe, to = data.draw(st.sampled_from(flying))
            self._arrive(pipe, to)
            if self.busy:
                for name in NAMES:
                    self.request(name, 1)

    @rule(name=st.sampled_from(NAMES), count=st.integers(1, 3))
    def request(self, name: str, count: int) -> None:
        node = self.nodes[name]
        if node.view is None:
            return  # it has not heard of the other's interest: no request goes there
        for _ in range(count):
            self.seq += 1
            ok = self._forward(node, ("req", name, self.seq))
            assert ok or self.faults, "no responders while the peer is up with interest"

    @rule(name=st.sampled_from(NAMES))
    def change_interest(self, name: str) -> None:
        """``Mesh._flush``: a delta on the peer's live link (the full set follows a switch)."""
        node = self.nodes[name]
        node.version += 1
        link = node.machine.current(other(name))
        if link is not None and link.state is LinkState.UP:
            self._send(node, link, ("interest", node.version, False))

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0]))
    def clock(self, dt: float) -> None:
        self._tick(dt if self.chaos else 0.1)

    @precondition(lambda self: self.chaos)
    @rule(data=st.data())
    def kill_link(self, data: st.DataObject) -> None:
        live = [p for p in self.pipes if not all(p.closed.values())]
        if not live:
            return
        pipe = data.draw(st.sampled_from(live))
        self.faults += 1
        self.lossy |= pipe.zmq
        for name in NAMES:
            pipe.to[name].clear()
            if not pipe.zmq:  # a reset: both ends see it; ZeroMQ reconnects by itself
                self._close_dead(pipe, name)

    def _close_dead(self, pipe: Pipe, name: str) -> None:
        end = pipe.ends[name]
        if end is not None and not pipe.closed[name]:
            self._run(self.nodes[name], self.nodes[name].machine.transport_lost(end, self.now))
        pipe.closed[name] = True

    @precondition(lambda self: self.chaos)
    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        """The node's process dies and a new one starts under the same name."""
        self.faults += 1
        self.restarts[name] += 1
        for pipe in self.pipes:
            if pipe.closed[name]:
                continue
            pipe.to[name].clear()  # in flight to the dead process: lost
            if pipe.zmq and pipe.dialer != name:
                # The peer's dialer reconnects to the new process, which never saw a HELLO.
                pipe.ends[name] = None
                continue
            pipe.closed[name] = True
            if not pipe.zmq:
                pipe.eof[other(name)] = True  # the kernel closes the dead process's sockets
        # Versions stand for time: the new process's interest is newer than anything the old
        # one sent (without incarnation ids a peer cannot tell them apart, and need not).
        fresh = self._fresh(name)
        fresh.version = self.nodes[name].version + 1
        self.nodes[name] = fresh

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def one_live_link_per_peer(self) -> None:
        for node in self.nodes.values():
            links = node.machine.links()
            up = [link for link in links if link.state is LinkState.UP]
            assert len(up) <= 1
            current = node.machine.current(other(node.name))
            if up:
                assert current is up[0]
            if current is not None:
                assert current.state in (LinkState.UP, LinkState.SWITCHING)
            elif node.machine.held(other(node.name)):
                raise AssertionError("frames held for a peer that is down")

    def teardown(self) -> None:
        if not self.nodes:
            return
        fault_free = not self.faults
        self._settle()
        if fault_free:
            # Everything resolved by what arrived: no timer was needed (and none ran out).
            assert not self.faults
            busy = [
                link
                for node in self.nodes.values()
                for link in node.machine.links()
                if link.state is not LinkState.UP
            ]
            assert not busy, f"links still {[link.state.value for link in busy]}"
            lost = self.accepted - self.delivered
            assert not lost, f"forwarded and never delivered: {sorted(lost)[:5]}"
        self._converge()
        if not self.seeds:
            return
        a, b = self.nodes["a"], self.nodes["b"]
        la, lb = a.machine.current("b"), b.machine.current("a")
        assert la is not None and lb is not None, "the nodes did not link again"
        assert la.state is LinkState.UP and lb.state is LinkState.UP
        assert a.pipes[la.id] is b.pipes[lb.id], "the two ends keep different links"
        if not self.lossy:  # an interest delta lost in a ZeroMQ reconnect is lost for good
            assert a.view == b.version and b.view == a.version, "interest did not converge"
        self.seq += 1
        request = ("req", "a", self.seq)
        assert self._forward(a, request)
        self._settle()
        assert request in self.delivered and ("rep", request) in self.delivered

    def _settle(self) -> None:
        """Deliver every frame in flight (each link in turn) and let dial loops dial."""
        for _ in range(10_000):
            flying = self._in_flight()
            if flying:
                for pipe, to in flying:
                    self._arrive(pipe, to)
                continue
            dialers = [n for n in self.nodes.values() if self._may_dial(n)]
            if not dialers:
                return
            for node in dialers:
                self._dial(node)
        raise AssertionError("the network never went quiet")

    def _converge(self) -> None:
        """Let the clock run (heartbeats delivered) until no link is between states."""
        for _ in range(100):
            self._settle()
            pending = any(
                link.state is not LinkState.UP
                for node in self.nodes.values()
                for link in node.machine.links()
            )
            if not pending and (not self.seeds or all(o in n.machine for o, n in self._pairs())):
                return
            self._tick(HEARTBEAT)
        raise AssertionError("the links never settled")

    def _pairs(self) -> list[tuple[str, Node]]:
        return [(other(name), node) for name, node in self.nodes.items()]


TwoNodes.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_nodes_peer_links = TwoNodes.TestCase


# -- the orderings named in the docs, as plain tests -------------------------------------


def _pair(seeds: str = "") -> TwoNodes:
    """Two nodes; only those in ``seeds`` dial by themselves (the test dials the others)."""
    m = TwoNodes()
    m.setup(seeds, zmq=False, boots=True)
    return m


def _deliver(m: TwoNodes, pipe: Pipe, to: str, frames: int = 1) -> None:
    for _ in range(frames):
        m._arrive(pipe, to)


def test_both_dial_and_the_refusal_arrives_before_the_welcome() -> None:
    """b's link is up at both; a dials too. b keeps a's link (a is the lower name) and refuses
    its own, and that REFUSE reaches a before the WELCOME of a's link: a holds what it
    forwards (no "no responders") and sends it on the kept link once that is up."""
    m = _pair()
    a, b = m.nodes["a"], m.nodes["b"]
    m._dial(b)
    m._settle()
    assert a.view == 0 and b.view == 0
    m._dial(a)
    kept = m.pipes[-1]
    old = m.pipes[0]
    _deliver(m, kept, "b")  # a's HELLO: b switches, refuses the old link, welcomes a's
    assert old.ends["b"] is not None and old.ends["b"].state is LinkState.SUPERSEDED
    m.request("a", 1)
    _deliver(m, old, "a", frames=len(old.to["a"]))  # the REFUSE first
    switching = old.ends["a"]
    assert switching is not None and a.machine.current("b") is switching
    assert switching.state is LinkState.SWITCHING and a.machine.held("b") == 0
    m.request("a", 1)  # held
    assert a.machine.held("b") == 1
    m._settle()
    assert not m.faults and m.accepted == m.delivered and len(m.delivered) == 4
    assert a.machine.current("b") is kept.ends["a"]
    assert [link.state for link in a.machine.links()] == [LinkState.UP]


def test_a_healthy_pair_does_not_dial_again() -> None:
    """The dialer whose link lost the duplicate waits for the peer to go down (it once redialled
    every 5 s, and each new link was refused again)."""
    m = _pair("ab")
    m._settle()
    for _ in range(40):  # 20 s of heartbeats
        m._tick(HEARTBEAT)
        m._settle()
    assert len(m.pipes) == 2 and not m.faults


def test_a_restarted_peer_replaces_its_old_link_at_once() -> None:
    """b restarts; its new process dials a, which still holds the old process's link: the
    new incarnation's link wins at once (its old requests are answered as lost), no timer."""
    m = _pair()
    a = m.nodes["a"]
    m._dial(a)
    m._settle()
    m.restart("b")
    m.pipes[0].eof["a"] = False  # the close of the dead process has not arrived yet
    m._dial(m.nodes["b"])
    m._settle()
    new = m.pipes[1].ends["a"]
    assert new is not None and a.machine.current("b") is new and new.state is LinkState.UP


@pytest.mark.parametrize("reason", [DUPLICATE, "role"])
def test_a_refusal_in_the_handshake_closes_the_link(reason: str) -> None:
    m = _pair()
    a = m.nodes["a"]
    m._dial(a)
    link = a.dialing
    assert link is not None
    actions = a.machine.refused(link, reason, 0.0)
    assert [type(x) for x in actions] == [Close] and link.state is LinkState.CLOSED
    assert a.machine.may_redial(link)
