"""``python -m kernel`` is the ``kernel`` command."""

from kernel._cli import main

main()
