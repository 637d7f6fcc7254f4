"""Where the tests find the checkout's files (recipes, profiles, scripts)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
