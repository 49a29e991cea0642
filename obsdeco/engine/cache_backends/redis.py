"""Redis through the `redis` package: each response under `obsdeco:cache:<key>` (the prefix can
be changed), written with `SET key value PX ttl` so that Redis expires it, in one transaction
per batch. Timeouts are short (1 s) and a failed command is retried once, at once, so that a
slow or dead server costs a read little before the cache stops asking it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEFAULT_PREFIX = "obsdeco:cache:"
_TIMEOUT_S = 1.0


class RedisBackend:
    """A `RemoteBackend` over one Redis client (a thread-safe connection pool)."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=_TIMEOUT_S,
            socket_connect_timeout=_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        self.prefix = prefix
        kwargs = self.client.connection_pool.connection_kwargs
        self.name = (
            f"{url.partition('://')[0]}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            f"/{kwargs.get('db', 0)}"
        )

    def read(self, key: str) -> bytes | None:
        value = self.client.get(self.prefix + key)
        return None if value is None else bytes(value)  # type: ignore[arg-type]

    def write(self, items: Sequence[tuple[str, bytes, float | None]], now: float) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            for key, value, expires_at in items:
                if expires_at is None:
                    pipe.set(self.prefix + key, value)
                else:
                    pipe.set(
                        self.prefix + key, value, px=max(1, math.ceil((expires_at - now) * 1000))
                    )
            pipe.execute()

    def delete_expired(self, keys: Sequence[str], now: float) -> None:
        """Nothing to do: Redis expires entries itself (by its own clock)."""

    def close(self) -> None:
        self.client.close()

    def forget_after_fork(self) -> None:
        """Nothing to do: the connection pool notices the new process and opens its own."""
