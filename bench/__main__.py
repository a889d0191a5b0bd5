"""``python -m bench``: the bench CLI on its own (``fabric bench`` runs the same command)."""

from bench.cli import main

main()
