"""Publish a directory only when it is complete: build into ``<name>.partial``, then rename.

A build or render that is interrupted (Ctrl-C, a crash, a full disk) leaves no folder a
later deploy could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging path beside ``target``; on success it replaces ``target``."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield partial
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
