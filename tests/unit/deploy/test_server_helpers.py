"""Pure helpers of the local server's supervisor."""

from __future__ import annotations

import signal

import pytest

from edgectl.client import checked_model_name
from edgectl.deploy.supervisor import describe_exit
from edgectl.errors import EdgectlError


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


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x y", ".hidden", "a" * 65, "m;rm"])
def test_model_names_that_could_escape_a_url_or_path_are_refused(name: str) -> None:
    with pytest.raises(EdgectlError, match="is not valid"):
        checked_model_name(name)


@pytest.mark.parametrize("name", ["ensemble", "smollm2-135m_int4", "m.v2"])
def test_plain_model_names_pass(name: str) -> None:
    assert checked_model_name(name) == name
