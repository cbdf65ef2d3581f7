"""How tests run the installed ``es`` command as a real process."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def es_command() -> list[str]:
    """The ``es`` script next to this interpreter (the package installed in its environment),
    else ``python -m eventstore.cli``."""
    script = Path(sys.executable).with_name("es")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "eventstore.cli"]


def environment(data: Path) -> dict[str, str]:
    """This process's environment for ``es`` on the store at ``data`` (no debug, no other store)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ES_DEBUG", "ES_DATA")}
    return {**env, "ES_DATA": str(data)}
