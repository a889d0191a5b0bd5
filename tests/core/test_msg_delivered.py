"""The SDK's per-delivery ``Msg`` constructor sets every slot as ``Msg.__init__`` does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdk._msg import Msg, delivered


def _slots(msg: Msg) -> dict[str, object]:
    return {name: getattr(msg, name) for name in Msg.__slots__ if name != "__weakref__"}


@given(
    subject=st.text(min_size=1, max_size=20),
    data=st.binary(max_size=32),
    headers=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5))),
    reply=st.text(max_size=20),
    deadline=st.one_of(st.none(), st.floats(allow_nan=False)),
    status=st.integers(min_value=0, max_value=600),
    seq=st.integers(min_value=0),
    msg_id=st.integers(min_value=0),
    traceparent=st.text(max_size=20),
)
def test_delivered_is_msg_init(
    subject: str, data: bytes, headers: dict[str, str] | None, reply: str,
    deadline: float | None, status: int, seq: int, msg_id: int, traceparent: str,
) -> None:
    via = object()
    fast = delivered(subject, data, headers, reply, deadline, status, seq, msg_id,
                     traceparent, None, via)  # type: ignore[arg-type]
    slow = Msg(subject, data, headers=headers, reply=reply, deadline=deadline, status=status,
               seq=seq, msg_id=msg_id, traceparent=traceparent, agent=None,
               via=via)  # type: ignore[arg-type]
    assert _slots(fast) == _slots(slow)
    assert not fast.shared and fast.sender is None
