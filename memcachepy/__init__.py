"""memcachepy: a memcached-compatible cache daemon with a GIL-free Cython core."""
__version__ = "0.1.0"
