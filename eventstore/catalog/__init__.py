"""The LMDB catalog: topic configurations (cached), recovery checkpoints, and
room for cursors and stream indexes. It knows nothing of segment bytes."""

from .env import Catalog

__all__ = ["Catalog"]
