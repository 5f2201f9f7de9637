"""The Redis calls of :class:`~aiotlspool.RedisSessionCache`, each bounded in time.

Every call runs under a deadline of the store's ``timeout`` (so a client without socket
timeouts cannot hang a connect either); a failure is counted (``on_failure``) and raised,
redis-py's timeouts as the built-in ``TimeoutError``. Scripts are called by EVALSHA, and by EVAL
when the server does not have them (restarted, or another node). redis-py is imported here
only when a store is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._timeout import deadline
from . import redis_entries as data
from .file_entries import EntryName
from .redis_writer import Pending

__all__ = ["LEAD", "NO_FLIGHT", "WAIT", "PutReply", "RedisIO", "TakeReply", "client_for"]

T = TypeVar("T")
NO_FLIGHT, LEAD, WAIT = 0, 1, 2  # the TAKE script's answers about the key's single flight


@dataclass(frozen=True, slots=True)
class TakeReply:
    element: bytes | None  # the entry taken or read, None when the key has none
    expired: int  # expired entries the script dropped
    taken: bool  # popped (a ticket, or no entry at all); else it stays for others
    names: tuple[EntryName, ...]  # the key's entries after
    flight: int = NO_FLIGHT  # on an empty key: LEAD (the caller does the handshake) or WAIT


@dataclass(frozen=True, slots=True)
class PutReply:
    evicted: int
    waited: int  # takes that found the key's flight (ended by this write)
    victims: list[str]  # key ids evicted by the bound on keys
    names: tuple[EntryName, ...]


class RedisIO:
    """One store's calls through ``client`` under the names of ``keys``."""

    def __init__(
        self, client: Any, keys: data.Keys, timeout: float, on_failure: Callable[[], None]
    ) -> None:
        try:
            from redis import exceptions
            from redis.asyncio.cluster import RedisCluster
        except ImportError as exc:
            raise ImportError(
                "RedisSessionCache needs redis-py (pip install 'aiotlspool[redis]')",
                name="redis",
            ) from exc
        kwargs: dict[str, Any] = getattr(client, "get_connection_kwargs", dict)()
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses (entries are bytes)")
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self._on_failure = on_failure
        self.answered_at = 0.0  # time.monotonic() of Redis's last answer
        self._timeout_error: type[Exception] = exceptions.TimeoutError
        self._no_script: type[Exception] = exceptions.NoScriptError
        # redis-py's cluster pipelines refuse scripts: there, one call per entry.
        self._pipelines = not isinstance(client, RedisCluster)

    async def take(
        self, key_id: str, ttl: float, reuse: bool, lease: float = 0.0, token: str = ""
    ) -> TakeReply:
        """Take (or read) the key's newest entry; on an empty key with a ``lease`` (seconds),
        lead its single flight under ``token`` or learn that another process leads it."""
        args = [_ms(time.time()), _ms(ttl), "1" if reuse else "0", key_id, data.lru_score()]
        args += [max(1, _ms(lease)) if lease > 0 else 0, token]
        reply = await self.call(lambda: self._eval(data.TAKE, self._names(key_id), args))
        names = data.headers_of(reply[4:])
        element = reply[0] or None
        return TakeReply(element, int(reply[1]), bool(reply[2]), names, int(reply[3]))

    async def remove(self, key_id: str, element: bytes) -> None:
        """Remove one exact entry (a refused one that reads leave in place)."""
        await self.call(lambda: self.client.lrem(self.keys.entries(key_id), 1, element))

    async def drop(self, key_id: str, what: str, value: str) -> tuple[int, tuple[EntryName, ...]]:
        """Remove the key's entries with tag or writer ``value`` (or all): (how many, the
        names left)."""
        args = [what, value, key_id]
        reply = await self.call(lambda: self._eval(data.DROP, self._names(key_id), args))
        return int(reply[0]), data.headers_of(reply[1:])

    async def put(
        self, items: list[Pending], touches: dict[str, int], max_keys: int, ttl: float
    ) -> list[PutReply]:
        """Write ``items`` in one pipeline; ``touches`` (key id -> LRU score of its last local
        use) update the LRU index with them."""
        return await self.call(lambda: self._put(items, touches, max_keys, ttl))

    async def clear(self) -> None:
        """UNLINK every key of the namespace, found by SCAN (each step bounded)."""
        found = self.client.scan_iter(match=self.keys.pattern, count=500).__aiter__()
        names: list[Any] = []
        while True:
            try:
                names.append(await self.call(found.__anext__))
            except StopAsyncIteration:
                break
            if len(names) >= 500:
                await self._unlink(names)
                names = []
        if names:
            await self._unlink(names)

    async def _unlink(self, names: list[Any]) -> None:
        await self.call(lambda: self.client.unlink(*names))

    async def settled(self, done: asyncio.Future[None]) -> None:
        """Wait (at most ``timeout``) for a batch being written; its failure is the
        writer's to count."""
        with contextlib.suppress(TimeoutError):
            async with deadline(self.timeout):
                await asyncio.shield(done)

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` bounded by ``timeout``; a failure is counted and raised."""
        try:
            async with deadline(self.timeout):
                result = await call()
            self.answered_at = time.monotonic()
            return result
        except StopAsyncIteration:
            raise
        except self._timeout_error as exc:
            self._on_failure()
            raise TimeoutError(f"Redis did not answer within {self.timeout}s: {exc}") from exc
        except Exception:
            self._on_failure()
            raise

    # -- the calls themselves ---------------------------------------------------------------

    def _names(self, key_id: str) -> list[str]:
        k = self.keys
        return [k.entries(key_id), k.lru, k.flight(key_id), k.waiting(key_id)]

    async def _eval(self, script: data.Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        except self._no_script:
            return await self.client.eval(script.lua, len(keys), *keys, *args)

    async def _put(
        self, items: list[Pending], touches: dict[str, int], max_keys: int, ttl: float
    ) -> list[PutReply]:
        if not items:
            if touches:
                await self.client.zadd(self.keys.lru, dict(touches), xx=True)
            return []
        pairs = [str(v) for member, when in touches.items() for v in (member, when)]
        calls = []
        for i, item in enumerate(items):
            score = data.lru_score()
            stale = score - int((ttl * 1000 + data.EXPIRY_GRACE_MS) * 1000)
            args = [item.element(), item.name.tag, "13" if item.name.tls13 else "12", item.keep]
            args += [item.px, score, max_keys, stale]
            args += [self.keys.prefix, item.key_id, *(pairs if i == 0 else [])]
            calls.append((self._names(item.key_id), args))
        if not self._pipelines or len(calls) == 1:  # (a pipeline costs more for one call)
            replies = [await self._eval(data.PUT, names, args) for names, args in calls]
        else:
            pipe = self.client.pipeline(transaction=False)
            for names, args in calls:
                pipe.evalsha(data.PUT.sha, len(names), *names, *args)
            replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, self._no_script):
                names, args = calls[i]
                replies[i] = await self.client.eval(data.PUT.lua, len(names), *names, *args)
        out = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            victims = [v.decode() for v in reply[4 : 4 + int(reply[3])]]
            names_after = data.headers_of(reply[4 + len(victims) :])
            out.append(PutReply(int(reply[1]), int(reply[2]), victims, names_after))
        return out


def client_for(url: str, socket_timeout: float, options: Mapping[str, Any] | None) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` with ``socket_timeout`` to connect and per reply
    and one immediate retry on a new connection; ``options`` go to ``Redis.from_url``."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    settings: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 1),
    }
    settings.update(options or {})
    return Redis.from_url(url, **settings)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
