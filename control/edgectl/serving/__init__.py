"""Code shared by the Triton Python models in ``model_repository/``.

The models import this package from the environment Triton's Python stub runs
in (the project's venv).  Nothing here imports ``triton_python_backend_utils``,
so every piece is unit-testable without a server; the thin ``model.py`` files
adapt it to Triton.
"""
