# The Flask example of docs/testing.md (kept identical to it by a test).
from flask import Flask
from flask_caching import Cache

cache = Cache()
CALLS = {"report": 0}


def create_app(memcached_servers=("127.0.0.1:11211",)):
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE="MemcachedCache",
        CACHE_MEMCACHED_SERVERS=list(memcached_servers),
        CACHE_DEFAULT_TIMEOUT=60,
    )
    cache.init_app(app)

    @app.route("/report")
    @cache.cached(timeout=60)
    def report():
        CALLS["report"] += 1
        return {"rows": 42, "computed": CALLS["report"]}

    return app
