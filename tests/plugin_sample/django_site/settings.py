# The Django settings snippet of docs/testing.md (kept identical to it by a test).
import os

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": os.environ.get("MEMCACHED_LOCATION", "127.0.0.1:11211"),
    }
}
