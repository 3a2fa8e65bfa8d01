"""`python -m memcachepy`: the daemon, same as the `memcachepy` command."""
import sys

from .cli import main

sys.exit(main())
