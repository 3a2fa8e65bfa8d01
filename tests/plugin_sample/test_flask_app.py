# Tests of the Flask example of docs/testing.md (kept identical to it by a test).
import pytest

pytest.importorskip("flask_caching")

from flask_app import CALLS, create_app   # noqa: E402


@pytest.fixture
def app(memcached_server):
    memcached_server.flush()
    return create_app([memcached_server.server_string])


def test_report_is_computed_once_per_minute(app, memcached_server):
    client = app.test_client()
    first = client.get("/report").get_json()
    assert client.get("/report").get_json() == first          # served from memcached
    memcached_server.advance_clock(61)                        # needs the embedded server
    assert client.get("/report").get_json()["computed"] == first["computed"] + 1


def test_report_cache_is_shared_between_app_instances(app, memcached_server):
    other = create_app([memcached_server.server_string])
    first = app.test_client().get("/report").get_json()
    assert other.test_client().get("/report").get_json() == first
    assert int(memcached_server.stats()["get_hits"]) >= 1
