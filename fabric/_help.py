"""How ``fabric --help`` shows options: flags without a value type.

typer 0.2x appends the parameter's type to every option in help, flags included, so a flag
read as if it took a value (``--quick <bool>``, even ``--help <bool>``). A flag takes none:
for flags the type is left out. Every other option keeps its type (``--repeats <int>``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["hide_flag_types"]


def hide_flag_types() -> None:
    """Patch typer's option help once so flags show no ``<bool>``; a no-op on typer versions
    without the per-option type display."""
    try:
        from typer.core import TyperOption
    except ImportError:
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_flags_hidden", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        result: str | None = original(self, ctx)
        return result

    display_type_rich._flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
