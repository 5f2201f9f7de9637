"""httpx: key a resuming context's sessions per port, through request event hooks.

>>> ctx = enable_resumption(ssl.create_default_context())         # doctest: +SKIP
>>> async with httpx.AsyncClient(verify=ctx, event_hooks=resumption_event_hooks()) as c: ...

Event hooks are public httpx API. A request hook runs in the task (or thread) that then opens the
connection, before it opens it, and has no "after": it sets the hint for the rest of that task,
and the next request sets its own. A hint only ever applies to connections to the name it names
(:mod:`.ports`). httpx is not imported here. The name is the request's ``sni_hostname``
extension when set, else the URL's host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .ports import set_endpoint_hint

__all__ = ["resumption_event_hooks"]


def _hint_from(request: Any) -> None:
    url = request.url
    if url.scheme != "https":
        return
    name = request.extensions.get("sni_hostname") or url.raw_host
    port = url.port if url.port is not None else 443
    set_endpoint_hint(name, port)


async def _async_hook(request: Any) -> None:
    _hint_from(request)


def _sync_hook(request: Any) -> None:
    _hint_from(request)


def resumption_event_hooks(*, sync: bool = False) -> dict[str, list[Callable[[Any], Any]]]:
    """``event_hooks`` for ``httpx.AsyncClient`` (or ``httpx.Client`` with ``sync=True``).

    Merge with hooks of your own by adding ours to your ``"request"`` list.
    """
    if sync:
        return {"request": [_sync_hook]}
    return {"request": [_async_hook]}
