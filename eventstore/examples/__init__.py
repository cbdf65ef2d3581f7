"""Runnable examples that ship with the package (``es demo`` runs the e-commerce flow).

The scripts in the repository's ``examples/`` folder run these modules.
"""
