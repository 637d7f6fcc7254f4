"""Multi-model time-slicing (issue 5).

HELPERS: the agreed spec and working rules are in /tmp/prompts/ts_spec.md and
/tmp/prompts/common.md (deadline 17:30 UTC, never git commit). Read them first.
"""
