"""Pure helpers of the local server's supervisor."""

from __future__ import annotations

import signal

import pytest

from edgectl.supervisor import describe_exit


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (0, "exited with code 0"),
        (1, "exited with code 1"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit_names_the_signal_or_code(returncode: int, expected: str) -> None:
    assert describe_exit(returncode) == expected
