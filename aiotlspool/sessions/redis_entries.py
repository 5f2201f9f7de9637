"""The data of :class:`~aiotlspool.RedisSessionCache` in Redis: key names, entries, scripts.

Every key of a store starts with ``{NAMESPACE}:`` (a Redis Cluster hash tag: all of a store's
keys are in one slot, so that the scripts below may touch several of them)::

    {NAMESPACE}:<key id>   LIST of one SessionKey's entries, newest first (LPUSH, LTRIM),
                           expiring (PEXPIRE) when the longest-lived of them does, plus a grace
    {NAMESPACE}:lru        ZSET: <key id> -> when the key was last used (microseconds), for
                           the bound on how many keys the store holds (least recently used
                           go first)
    {NAMESPACE}:flight:<key id>   STRING: the token of the process doing the full handshake
                           for an empty key (the single flight), expiring with its lease
    {NAMESPACE}:waiting:<key id>  STRING: how many takes found that flight (others wait)

``<key id>`` is :func:`~aiotlspool.sessions.file_entries.key_dir_name` - SHA-256 of the key's
:meth:`~aiotlspool.SessionKey.store_id`, which names no server - and an entry is the file store's
entry: its name (a hint for the scripts: when stored, the server's deadline, TLS version, a tag
of the session id, the writer), a newline, and the sealed envelope bound to ``<key id>``::

    <stored ns, 20>-<deadline s, 11>-<12|13>-<tag, 16 hex>-<writer, 16 hex>.entry\\n<sealed>

What decides whether an entry is offered is its sealed contents, never its name: a name that
lies about the version or the times is refused or found expired when read.

The scripts run atomically in Redis (a script is one command): ``TAKE`` pops the newest TLS 1.3
ticket (or reads a reusable session in place), so that one taker gets each ticket, and on an
empty key makes the caller the flight's leader (``SET NX PX``) or tells it that another leads;
``PUT`` pushes an entry, applies the per-key rules and the bound, and ends the key's flight
(returning whether anyone waited); ``DROP`` removes entries by tag, by writer or all of them.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .cached import TLS13, CachedSession
from .file_entries import EntryName, parse_name, seal_entry, session_tag
from .key import SessionKey
from .sealing import EntrySealer

__all__ = [
    "DROP",
    "EXPIRY_GRACE_MS",
    "HEADER_BYTES",
    "PUT",
    "TAKE",
    "Keys",
    "Script",
    "apply_put",
    "element_of",
    "headers_of",
    "lru_score",
    "name_of",
    "sealing",
    "split_element",
]

HEADER_BYTES = 75  # len(EntryName.file_name)
# How much longer than its entries a list lives in Redis: readers decide expiry on the
# contents, with their clocks; the grace lets them find (and count) what ran out.
EXPIRY_GRACE_MS = 1000
NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")
_last_score = 0


def lru_score() -> int:
    """Now in microseconds, increasing at every call in this process: the LRU index's score
    (two uses of this process never tie)."""
    global _last_score
    _last_score = max(time.time_ns() // 1000, _last_score + 1)
    return _last_score


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis key names of one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}:"

    @property
    def lru(self) -> str:
        return self.prefix + "lru"

    def entries(self, key_id: str) -> str:
        return self.prefix + key_id

    def flight(self, key_id: str) -> str:
        return self.prefix + "flight:" + key_id

    def waiting(self, key_id: str) -> str:
        return self.prefix + "waiting:" + key_id

    @property
    def pattern(self) -> str:
        """A SCAN pattern for every key of the namespace (its characters are never special)."""
        return self.prefix + "*"


def name_of(session: CachedSession, stored_ns: int, writer: str, ends: float) -> EntryName:
    """The name of ``session``'s entry (what ``seal_entry`` would name it, without sealing);
    the server's lifetime ``ends`` then (epoch seconds)."""
    deadline = math.ceil(ends)
    tls13 = session.tls_version == TLS13
    return EntryName(stored_ns, deadline, tls13, session_tag(session.session_id), writer)


def sealing(
    sealer: EntrySealer, session: CachedSession, key: SessionKey, name: EntryName
) -> Callable[[], bytes]:
    """What makes the entry named ``name`` for ``session`` (sealed when called)."""

    def seal() -> bytes:
        return element_of(name, seal_entry(sealer, session, key, name.stored_ns, name.writer)[1])

    return seal


def element_of(name: EntryName, sealed: bytes) -> bytes:
    return name.file_name.encode("ascii") + b"\n" + sealed


def split_element(element: bytes) -> tuple[EntryName | None, bytes]:
    """An entry's name (None if it is no name) and its sealed part."""
    if len(element) <= HEADER_BYTES or element[HEADER_BYTES : HEADER_BYTES + 1] != b"\n":
        return None, b""
    header = element[:HEADER_BYTES].decode("ascii", "replace")
    return parse_name(header), element[HEADER_BYTES + 1 :]


def headers_of(raw: list[object]) -> tuple[EntryName, ...]:
    """The entry names a script returned (those that are names)."""
    names = []
    for item in raw:
        if isinstance(item, bytes):
            name = parse_name(item.decode("ascii", "replace"))
            if name is not None:
                names.append(name)
    return tuple(names)


def apply_put(
    names: tuple[EntryName, ...], new: EntryName, keep: int
) -> tuple[tuple[EntryName, ...], int]:
    """What ``PUT`` makes of a list holding ``names``: (the names after, how many evicted)."""
    if any(name.tls13 != new.tls13 for name in names):
        return (new,), len(names)
    if any(name.tag == new.tag for name in names):
        return names, 0
    after = (new, *names)
    return after[:keep], max(0, len(after) - keep)


class Script:
    """A Lua script, called by EVALSHA (EVAL when Redis does not know it yet: restarted, or
    another node)."""

    def __init__(self, lua: str) -> None:
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()


# Lua helpers shared by the scripts: the fields of an entry's name (see the module docstring).
_FIELDS = """
local function stored_ms(e) return tonumber(string.sub(e, 1, 17)) end
local function deadline_s(e) return tonumber(string.sub(e, 22, 32)) end
local function version(e) return string.sub(e, 34, 35) end
local function tag(e) return string.sub(e, 37, 52) end
local function writer(e) return string.sub(e, 54, 69) end
local function named(e) return #e > 76 and string.sub(e, 76, 76) == '\\n' end
local function headers(list, out)
  for _, e in ipairs(redis.call('LRANGE', list, 0, -1)) do out[#out + 1] = string.sub(e, 1, 75) end
  return out
end
"""

# KEYS: entries, lru, flight, waiting. ARGV: now (ms), ttl (ms), reuse tickets ('1'/'0'), key
# id, LRU score, flight lease (ms; 0: no single flight), the caller's flight token.
# Returns {entry or '', expired dropped, taken (1: popped), flight, names left...}; flight:
# 0 none, 1 the caller leads (the key is empty: it does the full handshake), 2 another leads.
TAKE = Script(
    _FIELDS
    + """
local now, ttl, reuse = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local expired, found, taken = 0, '', 0
while true do
  local e = redis.call('LINDEX', KEYS[1], 0)
  if not e then break end
  local stored, deadline, v = stored_ms(e), deadline_s(e), version(e)
  if not named(e) or not stored or not deadline or (v ~= '12' and v ~= '13') then
    redis.call('LPOP', KEYS[1])  -- no entry: the client refuses and counts it
    found, taken = e, 1
    break
  end
  if deadline * 1000 <= now or stored + ttl <= now then
    redis.call('LPOP', KEYS[1])
    expired = expired + 1
  else
    if v == '13' and not reuse then
      redis.call('LPOP', KEYS[1])
      taken = 1
    end
    found = e
    break
  end
end
local flight, lease = 0, tonumber(ARGV[6])
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[4])
else
  redis.call('ZADD', KEYS[2], 'XX', ARGV[5], ARGV[4])
end
if found == '' and lease > 0 then
  local leader = redis.call('GET', KEYS[3])
  if leader == ARGV[7] or redis.call('SET', KEYS[3], ARGV[7], 'NX', 'PX', lease) then
    flight = 1
  else
    flight = 2
    redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], lease)
  end
end
return headers(KEYS[1], {found, expired, taken, flight})
"""
)

# KEYS: entries, lru, flight, waiting. ARGV: entry, its tag, its version ('12'/'13'), entries
# kept per key, PEXPIRE (ms), LRU score, max keys, LRU scores below this are stale, key prefix,
# key id, then pairs (key id, LRU score) of keys used since the last write.
# Returns {stored (0: the same session was there), evicted, waited (takes that found the
# key's flight, which ends here), #victims, victims..., names...}.
PUT = Script(
    _FIELDS
    + """
local entry, new_tag, new_version = ARGV[1], ARGV[2], ARGV[3]
local keep, px, max_keys = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local evicted, stored = 0, 1
local old = redis.call('LRANGE', KEYS[1], 0, -1)
for _, e in ipairs(old) do
  if version(e) ~= new_version then  -- the server changed TLS version: the older kind goes
    redis.call('DEL', KEYS[1])
    evicted = #old
    break
  end
  if tag(e) == new_tag then stored = 0 end
end
if evicted > 0 then stored = 1 end
local waited = tonumber(redis.call('GET', KEYS[4]) or '0')
redis.call('DEL', KEYS[3], KEYS[4])  -- an entry is there: the flight's waiters may take it
if stored == 1 then
  local n = redis.call('LPUSH', KEYS[1], entry)
  if n > keep then
    redis.call('LTRIM', KEYS[1], 0, keep - 1)
    evicted = evicted + n - keep
  end
  if redis.call('PTTL', KEYS[1]) < px then redis.call('PEXPIRE', KEYS[1], px) end
end
for i = 11, #ARGV, 2 do redis.call('ZADD', KEYS[2], 'XX', ARGV[i + 1], ARGV[i]) end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[10])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[8])
local victims = {}
local excess = redis.call('ZCARD', KEYS[2]) - max_keys
if excess > 0 then  -- (one more than needed: never this key, were it among the oldest)
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess)) do
    if excess > 0 and member ~= ARGV[10] then
      local list = ARGV[9] .. member
      evicted = evicted + redis.call('LLEN', list)
      redis.call('DEL', list)
      redis.call('ZREM', KEYS[2], member)
      victims[#victims + 1] = member
      excess = excess - 1
    end
  end
end
if redis.call('PTTL', KEYS[2]) < px then redis.call('PEXPIRE', KEYS[2], px) end
local out = {stored, evicted, waited, #victims}
for _, member in ipairs(victims) do out[#out + 1] = member end
return headers(KEYS[1], out)
"""
)

# KEYS: entries, lru. ARGV: what ('all', 'tag' or 'writer'), its value, key id.
# Returns {removed, names left...}.
DROP = Script(
    _FIELDS
    + """
local what, value, removed = ARGV[1], ARGV[2], 0
if what == 'all' then
  removed = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
else
  for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    if (what == 'tag' and tag(e) == value) or (what == 'writer' and writer(e) == value) then
      removed = removed + redis.call('LREM', KEYS[1], 0, e)
    end
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[3]) end
return headers(KEYS[1], {removed})
"""
)
