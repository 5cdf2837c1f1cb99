"""``python -m tenure``: the same command line as the ``tenure`` console script."""

from .cli import main

main()
