"""Where the fleet lives in Redis: key names, the fenced Lua scripts, and the connection.

Every write a leader makes is a Lua script that first compares the lease's value (its fencing
token) with the one the leader holds, so a leader that lost its lease (paused, partitioned,
slow to notice) has every write refused instead of racing its successor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from ..errors import BrokerError

if TYPE_CHECKING:
    import coredis

__all__ = ["BROKER_DOWN", "BROKER_ERRORS", "GROUP", "Keys", "Scripts", "connect", "parse_url"]

#: The consumer group every leader reads the calls stream through.
GROUP: Final = "leaders"
_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# ACQUIRE(lease, fence; name, ttl_ms) -> "token:name" or nil. The token is the fencing token.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local value = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""
# RENEW(lease; value, ttl_ms) -> 1 if still ours.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# RELEASE(lease, released; value, ttl_ms) -> 1 if it was ours. A released lease leaves one
# notice on the released list, which a process waiting for the lease pops (BLPOP) and takes
# the lease at once, instead of at its next look (every ttl/3). The notice expires with the
# ttl: a process that comes later finds the lease free anyway.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
# FENCED(lease; value) -> 1 if ours: a check before a request that writes nothing to Redis.
_FENCED: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return 1
"""
# NOW(calls) -> the Redis server's time in ms: the clock of the calls stream's entry ids
# (run by the node that holds the stream, under Redis Cluster too).
_NOW: Final = """
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# PUT_FLUSH(lease, flushes, batch_ids; value, flush_id, record, batch_id, now_ms) -> 1/0.
_PUT_FLUSH: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[5]) - 86400000)
end
return 1
"""
# DROP_FLUSH(lease, flushes; value, flush_id) -> 1/0.
_DROP_FLUSH: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""
# DELIVER(lease, calls, results; value, group, entry_id, call_id, payload, ttl_ms)
#   -> -1 not leader, 0 already answered (or withdrawn), 1 delivered.
# The call's entry leaves the group's pending list in the same step as its result is sent, so
# a result reaches its caller at most once whichever leader (old or new) sends it.
_DELIVER: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('XACK', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('XDEL', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[4], 'r', ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return 1
"""
# TAKE_SLOT(lease, requests; value, now_ms, per_minute, member)
#   -> -1 not leader, 0 taken, else ms to wait. The fleet-wide sliding log of batch requests.
_TAKE_SLOT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local count = redis.call('ZCARD', KEYS[2])
if count < limit then
  redis.call('ZADD', KEYS[2], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], 120000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[2], count - limit, count - limit, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + 60000 - now)
"""


@final
@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one named fleet. One hash tag keeps them in one Redis Cluster slot, so the
    scripts may touch several."""

    prefix: str

    @classmethod
    def of(cls, name: str) -> Keys:
        return cls(f"llmfleet:{{{name}}}")

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def calls(self) -> str:
        return f"{self.prefix}:calls"

    @property
    def lease(self) -> str:
        return f"{self.prefix}:lease"

    @property
    def released(self) -> str:
        return f"{self.prefix}:released"

    @property
    def fence(self) -> str:
        return f"{self.prefix}:fence"

    @property
    def flushes(self) -> str:
        return f"{self.prefix}:flushes"

    @property
    def batch_ids(self) -> str:
        return f"{self.prefix}:batch_ids"

    @property
    def requests(self) -> str:
        return f"{self.prefix}:requests"

    def results(self, origin: str) -> str:
        return f"{self.prefix}:results:{origin}"


@final
class Scripts:
    """The Lua scripts, registered once per client (coredis loads them again after a
    server restart)."""

    def __init__(self, redis: coredis.Redis[str]) -> None:
        self.acquire = redis.register_script(_ACQUIRE)
        self.renew = redis.register_script(_RENEW)
        self.release = redis.register_script(_RELEASE)
        self.fenced = redis.register_script(_FENCED)
        self.put_flush = redis.register_script(_PUT_FLUSH)
        self.drop_flush = redis.register_script(_DROP_FLUSH)
        self.deliver = redis.register_script(_DELIVER)
        self.take_slot = redis.register_script(_TAKE_SLOT)
        self.now_ms = redis.register_script(_NOW)
        self._redis = redis

    async def load(self) -> None:
        """Load every script up front (else each one's first call is refused, then retried)."""
        for script in (
            self.acquire,
            self.renew,
            self.release,
            self.fenced,
            self.put_flush,
            self.drop_flush,
            self.deliver,
            self.take_slot,
            self.now_ms,
        ):
            await self._redis.script_load(script.script)


def _errors() -> tuple[type[BaseException], ...]:
    # A connection torn down under a request (its client's own tasks cancelled, as when the
    # fleet is cancelled from outside) raises anyio's ClosedResourceError/BrokenResourceError.
    torn = (anyio.ClosedResourceError, anyio.BrokenResourceError)
    try:
        import coredis.exceptions as exc
    except ImportError:  # pragma: no cover - coredis is needed to get this far
        return (OSError, *torn)
    return (exc.RedisError, OSError, TimeoutError, *torn)


#: What a lost or failing Redis raises through coredis (or through a torn connection).
BROKER_ERRORS: Final[tuple[type[BaseException], ...]] = _errors()
#: The same, and a Redis that does not answer in time (``anyio.fail_after``).
BROKER_DOWN: Final[tuple[type[BaseException], ...]] = (TimeoutError, *BROKER_ERRORS)


def parse_url(broker: str) -> str:
    """Check a broker URL early, with a message that says what is accepted."""
    if not isinstance(broker, str) or not broker.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"broker must be a Redis URL such as 'redis://127.0.0.1:6379/0', got {broker!r}"
        )
    return broker


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"broker_name must be 1-64 characters of letters, digits, '_', '-', '.', got {name!r}"
        )
    return name


def connect(url: str, *, timeout_s: float) -> coredis.Redis[str]:
    """A coredis client (anyio-based: it runs on asyncio and trio alike)."""
    try:
        import coredis
    except ImportError as exc:
        raise BrokerError(
            "open_fleet(broker=...) needs coredis: pip install 'llmfleet[redis]'"
        ) from exc
    client: Any = coredis.Redis.from_url(
        url,
        decode_responses=True,
        connect_timeout=timeout_s,
        # Above the longest BLOCK the fleet uses (1 s), so a blocked read is not cut short.
        stream_timeout=max(timeout_s, 5.0),
    )
    return client  # type: ignore[no-any-return]
