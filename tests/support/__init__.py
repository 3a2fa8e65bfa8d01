# Test support package for memcachepy's protocol tests.
#
# Owns the pieces every socket-level test shares: starting and stopping daemon processes
# (real memcached and memcachepy) on ephemeral loopback ports (daemons.py), a minimal
# raw-socket client that knows when a text-protocol reply is complete (rawclient.py), and
# the normaliser that erases what legitimately differs between two daemons (CAS values,
# pids, clocks, versions) before replies are compared byte for byte (normalise.py).
