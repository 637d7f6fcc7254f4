"""The one exception type the CLI turns into a clean message and exit code."""


class EdgectlError(Exception):
    """A user-facing failure: the message says what went wrong and what to do next."""
