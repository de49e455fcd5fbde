"""One expiring-value cache: trust for a TTL, serve through a grace period, back off after a failed fetch.

Used by the signing key (Secrets Manager) and the identity provider's keys (JWKS).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Generic, Optional, Protocol, TypeVar

from .errors import BehestLambdaError, FetchError

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class CacheEvents(Protocol[T_contra]):
    """What the owner of a cache is told, to log and count."""

    def replaced(self, old: Optional[T_contra], new: T_contra) -> None: ...

    def fetch_failed(self, failure: FetchError, *, serving_cached: bool, age: float, grace_left: float) -> None: ...


class ExpiringValue(Generic[T]):
    """A fetched value trusted for `ttl` seconds, then for `grace` more while fetches fail.

    After a failed fetch no caller waits on another for `retry_interval` seconds; with nothing
    usable held, `unavailable(retry_after)` is raised instead.
    """

    def __init__(
        self,
        fetch: Callable[[], T],
        *,
        ttl: float,
        grace: float,
        retry_interval: float,
        unavailable: Callable[[int], BehestLambdaError],
        events: Optional[CacheEvents[T]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.grace = grace
        self.retry_interval = retry_interval
        self._unavailable = unavailable
        self._events = events
        self._clock = clock
        self._lock = threading.Lock()
        self._value: Optional[T] = None
        self._fetched_at = 0.0
        self._next_attempt = 0.0

    def get(self, *, refresh_if_older_than: Optional[float] = None) -> T:
        """The value; fetched again when stale, or (`refresh_if_older_than`) when older than asked and allowed."""
        with self._lock:
            now = self._clock()
            held = self._value
            age = now - self._fetched_at
            if held is not None and age < self.ttl:
                wants_fresh = refresh_if_older_than is not None and age >= refresh_if_older_than
                if not wants_fresh or now < self._next_attempt:
                    return held
                return self._fetch_now(now) or held  # on failure the held value is still fresh
            if now >= self._next_attempt:
                fresh = self._fetch_now(now, age=age)
                if fresh is not None:
                    return fresh
            if held is not None and age < self.ttl + self.grace:
                return held
            raise self._unavailable(max(1, math.ceil(self._next_attempt - now)))

    def _fetch_now(self, now: float, *, age: float = 0.0) -> Optional[T]:
        try:
            fresh = self._fetch()
        except FetchError as failure:
            self._next_attempt = now + self.retry_interval
            if self._events is not None:
                grace_left = self.ttl + self.grace - age
                held = self._value is not None and grace_left > 0
                self._events.fetch_failed(failure, serving_cached=held, age=age, grace_left=grace_left)
            return None
        if self._events is not None:
            self._events.replaced(self._value, fresh)
        self._value, self._fetched_at, self._next_attempt = fresh, now, 0.0
        return fresh
