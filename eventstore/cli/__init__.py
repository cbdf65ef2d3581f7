"""The ``es`` command line (typer). One module per command group."""
