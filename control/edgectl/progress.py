"""How long-running work reports what it is doing: one line at a time, to a callback."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def silent(message: str) -> None:
    """The default progress: say nothing."""
