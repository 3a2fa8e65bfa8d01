"""A small application's caching code, as a project would write it against
pymemcache: cache-aside reads, a fixed-window rate limiter, CAS updates."""
from __future__ import annotations

import json
from typing import Callable


def cached_user(client, user_id: int, load: Callable[[int], dict], ttl: int = 300) -> dict:
    """Read through the cache: load from the database on a miss, keep it `ttl` s."""
    key = f"user:{user_id}"
    raw = client.get(key)
    if raw is not None:
        return json.loads(raw)
    user = load(user_id)
    client.set(key, json.dumps(user).encode(), expire=ttl)
    return user


def allow(client, who: str, limit: int, window: int = 60) -> bool:
    """At most `limit` calls per `window` seconds for `who`."""
    key = f"rate:{who}"
    if client.add(key, b"1", expire=window):
        return True
    count = client.incr(key, 1)
    if count is None:                   # expired between add and incr
        client.add(key, b"1", expire=window)
        return True
    return count <= limit


def update(client, key: str, change: Callable[[bytes], bytes], retries: int = 10) -> bytes:
    """Read-modify-write with gets/cas; retried when someone else wrote first."""
    for _ in range(retries):
        value, cas = client.gets(key)
        if value is None:
            new = change(b"")
            if client.add(key, new):
                return new
            continue
        new = change(value)
        if client.cas(key, new, cas):
            return new
    raise RuntimeError(f"{key}: too much contention")
