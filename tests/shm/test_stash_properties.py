"""The agent's pre-lease stash (fabric/shm/_stash.py) under any sequence of puts, leases and
refusals: bounded per class, demand-driven, and never hands a slot out twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.shm import Descriptor, SlotStash

SIZES = (4096, 65536, 1 << 20)
BOUNDS = (2, 1, 0)

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(min_value=0, max_value=(1 << 20) + 10)),
        st.tuples(st.just("refill"), st.lists(st.booleans(), max_size=4)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(OPS)
def test_bounded_demand_driven_and_no_slot_twice(ops: list[tuple[str, object]]) -> None:
    stash = SlotStash(SIZES, BOUNDS)
    next_slot = 0
    out: set[int] = set()  # slots handed to a put
    wanted: set[int] = set()
    for op, arg in ops:
        if op == "take":
            assert isinstance(arg, int)
            desc = stash.take(arg)
            c = next((i for i, s in enumerate(SIZES) if arg <= s), None)
            if c is not None and BOUNDS[c]:
                wanted.add(c)
            if desc is not None:
                assert c is not None and desc.length == arg and desc.segment == c
                assert desc.slot not in out
                out.add(desc.slot)
        else:
            assert isinstance(arg, list)
            sizes = stash.to_lease()
            assert {SIZES.index(s) for s in sizes} <= wanted  # only classes put in
            for size, ok in zip(sizes, [*arg, *[True] * len(sizes)], strict=False):
                if ok:
                    c = SIZES.index(size)
                    stash.leased(Descriptor(c, next_slot, 0, size, 1))
                    next_slot += 1
                else:
                    stash.failed(size)
                    wanted.discard(SIZES.index(size))
        for c, bound in enumerate(BOUNDS):
            assert len(stash._held[c]) + stash._leasing[c] <= bound
    assert stash.hits + stash.misses == sum(
        1 for op, arg in ops if op == "take" and isinstance(arg, int) and arg <= 65536
    )
    assert all(d.slot not in out for d in stash.drain())
    assert stash.held() == 0 and stash.to_lease() == []


def test_nothing_is_leased_before_a_put_in_the_class() -> None:
    stash = SlotStash(SIZES, BOUNDS)
    assert stash.to_lease() == []
    assert stash.take(70_000) is None  # the 1 MiB class: bound 0, never stocked
    assert stash.to_lease() == []
    assert stash.take(5000) is None  # a miss makes the class wanted
    assert stash.to_lease() == [65536]
    assert stash.to_lease() == []  # already being leased
