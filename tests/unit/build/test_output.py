"""A build's terminal shows our progress lines; what libraries print lands in the log.

Run in a child process: pytest's own capture replaces ``sys.stderr``, which would hide
what a real terminal sees.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgectl.build.output import library_output_to

CHILD = textwrap.dedent(
    """
    import os, sys, warnings
    from pathlib import Path
    from edgectl.build.output import library_output_to

    def progress(message):
        print(f"> {message}", file=sys.stderr)

    with library_output_to(Path(sys.argv[1]), progress) as say:
        os.write(2, b"C++ chatter on fd 2\\n")
        print("a tqdm bar", file=sys.stderr)
        print("stdout noise")
        warnings.warn("TracerWarning: something", stacklevel=1)
        say("exporting the model")
        os.write(1, b"more noise\\n")
    print("after the build")
    """
)


def test_library_output_goes_to_the_log_and_progress_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "model.build.log"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, check=True
    )
    assert child.stderr == "> exporting the model\n"
    assert child.stdout == "after the build\n"
    logged = log.read_text()
    for noise in ("C++ chatter", "a tqdm bar", "stdout noise", "TracerWarning", "more noise"):
        assert noise in logged
    assert "> exporting the model" in logged  # the log reads as a whole story


def test_the_terminal_comes_back_after_a_failure(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError), library_output_to(tmp_path / "b.log", print):
        raise RuntimeError("export failed")
    print("visible", flush=True)
    assert capfd.readouterr().out == "visible\n"
