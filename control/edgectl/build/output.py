"""Keep a build's terminal to our own progress lines; libraries' chatter goes to a log file.

Exporters print from Python and from C++ (tqdm bars, TracerWarnings, deprecation notices,
NNCF tables) straight to file descriptors 1 and 2, so those descriptors are pointed at
the log for the build; each progress line is written with the terminal put back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from edgectl.progress import Progress

STREAMS = (1, 2)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def library_output_to(log_path: Path, progress: Progress) -> Iterator[Progress]:
    """Send fds 1 and 2 to ``log_path`` (appended); yield a progress that reaches the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _flush()
    saved = {fd: os.dup(fd) for fd in STREAMS}
    with log_path.open("ab") as log:

        def to_terminal(message: str) -> None:
            _flush()
            log.write(f"> {message}\n".encode())
            log.flush()
            for fd in STREAMS:
                os.dup2(saved[fd], fd)
            try:
                progress(message)
                _flush()
            finally:
                for fd in STREAMS:
                    os.dup2(log.fileno(), fd)

        try:
            for fd in STREAMS:
                os.dup2(log.fileno(), fd)
            yield to_terminal
        finally:
            _flush()
            for fd in STREAMS:
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
