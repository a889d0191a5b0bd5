"""An agent's mapping of the node's pool: write a slot once, read any slot in place.

Closing and views. A ``memoryview`` returned by ``view`` or ``writable`` keeps the ``mmap``
alive and pins its pages; ``mmap.close()`` raises ``BufferError`` while any such view exists.
The rule: release every view (``with region.view(d) as v:`` or ``v.release()``, and drop numpy
arrays built on it) before ``close``. When views are still out, ``close`` does not fail: it
drops the region's own references and the pages are unmapped when the last view is released
and collected (CPython unmaps an ``mmap`` when it is deallocated, and a view holds a reference
to it), so no view can ever read unmapped memory.

Releasing the lease is a different matter: once the node has the RELEASE, the slot can be
reused and the bytes behind an old view change. Release the lease only after the last view
of the payload is gone.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from ._descriptor import Descriptor, validate_for_segment
from ._layout import PoolLayout
from ._memfd import map_segment, verify_segment
from ._settings import PAGE

__all__ = ["SharedRegion"]

# Not exported by the mmap module of Python 3.11; values from <linux/mman.h>.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


class SharedRegion:
    """The pool as one agent sees it: a mapping per segment and the layout to check against."""

    __slots__ = ("_bases", "_closed", "_maps", "layout")

    def __init__(self, layout: PoolLayout, maps: Mapping[int, mmap.mmap]) -> None:
        """Wrap existing mappings, one per segment of ``layout``.

        Raises:
            RemoteProtocolError: a segment is missing or smaller than the layout says.
        """
        self.layout = layout
        for seg, size in enumerate(layout.segment_sizes):
            if seg not in maps or len(maps[seg]) < size:
                raise RemoteProtocolError(f"segment {seg} is missing or smaller than its layout")
        self._maps = dict(maps)
        # One base view per segment: slicing it is cheaper than a new memoryview per call.
        self._bases = {seg: memoryview(m) for seg, m in self._maps.items()}
        self._closed = False

    @classmethod
    def attach(
        cls, layout: PoolLayout, fds: Sequence[int], *, close_fds: bool = True
    ) -> SharedRegion:
        """Verify and map the segment fds a node sent (``fds[i]`` is segment ``i``).

        With ``close_fds`` the fds are closed once mapped (or on failure): the mappings keep
        the memory alive, and an agent holding no fd cannot resize anything anyway.

        Raises:
            RemoteProtocolError: wrong number of fds, an unsealed fd, or a size that does
                not match the layout.
            ConfigError: mapping failed.
        """
        maps: dict[int, mmap.mmap] = {}
        try:
            if len(fds) != len(layout.segment_sizes):
                raise RemoteProtocolError(
                    f"node sent {len(fds)} segment fds for {len(layout.segment_sizes)} segments"
                )
            for seg, (fd, size) in enumerate(zip(fds, layout.segment_sizes, strict=True)):
                verify_segment(fd, size)
                maps[seg] = map_segment(fd, size)
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        finally:
            if close_fds:
                for fd in fds:
                    os.close(fd)
        return cls(layout, maps)

    def _range(self, desc: Descriptor) -> tuple[memoryview, int, int]:
        if self._closed:
            raise LocalProtocolError("the shared-memory region is closed")
        base = self._bases.get(desc.segment) if type(desc.segment) is int else None
        if base is None:
            validate_for_segment(desc, 0, self.layout)  # raises with the precise reason
            raise LocalProtocolError("unreachable: segment without a mapping")
        validate_for_segment(desc, len(base), self.layout)
        return base, desc.offset, desc.offset + desc.length

    def view(self, desc: Descriptor) -> memoryview:
        """The payload, read-only and zero-copy (``np.frombuffer``, ``msgpack.unpackb`` and
        ``Model.model_validate_json`` take it as is).

        Raises:
            BadDescriptor: the descriptor points outside its slot or the mapping.
            LocalProtocolError: the region is closed.
        """
        base, start, end = self._range(desc)
        return base[start:end].toreadonly()

    def writable(self, desc: Descriptor) -> memoryview:
        """A writable view of the payload range, for producers that serialise in place.

        Raises like ``view``.
        """
        base, start, end = self._range(desc)
        return base[start:end]

    def write(self, desc: Descriptor, data: Any) -> None:
        """Copy ``data`` (bytes or any buffer of exactly ``desc.length`` bytes) into the slot:
        one memcpy for a contiguous buffer.

        Raises:
            BadDescriptor: the descriptor points outside its slot or the mapping.
            ValueError: ``data`` is not ``desc.length`` bytes long.
            TypeError: ``data`` does not support the buffer protocol.
            LocalProtocolError: the region is closed.
        """
        base, start, end = self._range(desc)
        src = memoryview(data)
        # A strided buffer (e.g. a numpy column) needs one gathering copy first.
        src = src.cast("B") if src.c_contiguous else memoryview(src.tobytes())
        if src.nbytes != end - start:
            raise ValueError(f"data has {src.nbytes} bytes, descriptor says {end - start}")
        base[start:end] = src

    def populate(self, *, write: bool) -> None:
        """Fault every page of every segment in now rather than on first use.

        The node calls ``populate(write=True)`` at start, before any slot is allocated, when
        ``PoolSettings.prefault`` is set: the memfd's pages are allocated once, so no producer
        pays for it on a slot's first write. On memfd even a read fault of an unwritten page
        allocates it, so ``write=False`` commits the memory just the same; an agent may call
        it after the node prefaulted, to fill its own page tables ahead of its first reads.
        Uses ``MADV_POPULATE_WRITE``/``_READ`` (Linux 5.14); older kernels fall back to
        touching one byte per page, which for ``write=True`` rewrites a byte with its own
        value: call it only while no one else writes the pool.

        Raises:
            LocalProtocolError: the region is closed.
        """
        if self._closed:
            raise LocalProtocolError("the shared-memory region is closed")
        advice = _MADV_POPULATE_WRITE if write else _MADV_POPULATE_READ
        for seg, mm in self._maps.items():
            try:
                mm.madvise(advice)
                continue
            except OSError:
                pass  # kernel before 5.14: EINVAL
            base = self._bases[seg]
            for off in range(0, len(base), PAGE):
                if write:
                    base[off] = base[off]
                else:
                    _ = base[off]  # the read faults the page in

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> bool:
        """Stop handing out views and unmap the segments.

        Returns True if every segment was unmapped now, False if views were still exported
        (those segments are unmapped once the last view goes; see the module docstring).
        Never raises ``BufferError``; a second call does nothing and returns True.
        """
        if self._closed:
            return True
        self._closed = True
        for base in self._bases.values():
            base.release()  # our own export; views sliced from it hold their own
        self._bases.clear()
        all_unmapped = True
        for seg in list(self._maps):
            try:
                self._maps[seg].close()
            except BufferError:
                all_unmapped = False
                continue
            del self._maps[seg]
        # Deferred segments: the remaining views keep their mmap objects alive and CPython
        # unmaps each when it is deallocated. Drop ours so that can happen.
        self._maps.clear()
        return all_unmapped

    def __enter__(self) -> SharedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
