"""``python -m edgectl.cli``: the same as the ``edgectl`` script."""

from edgectl.cli import main

main()
