"""A tiny file-based channel that carries client cancellations to the engine step.

Triton's ensemble scheduler checks cancellation only between steps, so a
request already running in the decoupled engine step never sees that its
client went away.  The postprocessing step does: each later engine response
reaches it as a cancelled request.  Postprocessing then posts the engine's
``request_key`` here and the engine thread cancels that sequence.
"""

from __future__ import annotations

import os
from pathlib import Path


class CancelBoard:
    """One directory; a file named by a request key means "cancel that request"."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def post(self, key: int) -> None:
        (self.directory / str(int(key))).touch()

    def take(self, active_keys: set[int]) -> set[int]:
        """Posted keys of requests still in ``active_keys``; every post is consumed.

        A key is only posted after the engine sent a response carrying it, so a
        post for a key not active belongs to a request that already finished.
        """
        taken: set[int] = set()
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            return taken
        for entry in entries:
            if entry.name.isdigit() and int(entry.name) in active_keys:
                taken.add(int(entry.name))
            Path(entry.path).unlink(missing_ok=True)
        return taken
