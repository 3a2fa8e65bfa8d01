"""memcachepy: a memcached-compatible cache daemon with a GIL-free Cython core.

`memcachepy.Server` runs one inside the current process (memcachepy.embed)."""
__version__ = "0.1.0"

__all__ = ["Server", "__version__"]


def __getattr__(name: str) -> object:
    # Imported on first use, so that `import memcachepy` (the CLI, the tools)
    # stays as light as before.
    if name == "Server":
        from .embed import Server
        return Server
    raise AttributeError(f"module 'memcachepy' has no attribute {name!r}")
