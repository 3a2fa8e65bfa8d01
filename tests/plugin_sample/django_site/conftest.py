# Django's side of the sample suite: settings from settings.py, then the
# docs/testing.md fixture pointing CACHES at the plugin's server.
import pytest

django = pytest.importorskip("django")

from django.conf import settings   # noqa: E402

if not settings.configured:
    from django_site import settings as site_settings
    settings.configure(CACHES=site_settings.CACHES, USE_TZ=True)
    django.setup()

from django.test import override_settings   # noqa: E402


@pytest.fixture(autouse=True)
def memcached_cache(memcached_server):
    memcached_server.flush()
    with override_settings(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": memcached_server.server_string}}):
        yield
