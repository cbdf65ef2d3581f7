"""ApiVersions (18), versions 0 to 4: the table of what is served (docs/protocol.md, section 4).

A version above 4 never reaches this handler: the dispatcher answers it in v0 form
with UNSUPPORTED_VERSION and the same table (KIP-511).
The extension APIs (section 7) are listed only when every one of them has a handler:
clients act on what is listed.
"""

from __future__ import annotations

from typing import Any

from ...wire import RequestHeader
from ...wire.apis import API_VERSIONS_KEY
from ...wire.messages import api_versions_response
from ..context import Context
from ..dispatch import extensions_served, handles


@handles(API_VERSIONS_KEY)
async def api_versions(ctx: Context, header: RequestHeader, body: Any) -> Any:
    """Every API and version served; the extension APIs once their handlers are there."""
    return api_versions_response(header.api_version, extensions=extensions_served())
