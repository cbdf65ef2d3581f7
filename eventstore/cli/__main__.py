"""``python -m eventstore.cli``: the ``es`` command."""

from .app import main

main()
