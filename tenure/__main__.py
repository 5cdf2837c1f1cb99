"""``python -m tenure``: the same command line as the ``tenure`` console script."""

from .runtime._cli import main

main()
