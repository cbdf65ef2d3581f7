"""The handlers, one module per group of APIs; importing this package registers them all.

Each module registers its coroutines with ``@handles(api_key)``
(``eventstore.server.dispatch``). Add a module's import line here.
"""

from . import api_versions  # noqa: F401
from . import streams  # noqa: F401
from . import groups  # noqa: F401
