# Test support package for memcachepy's tests: the only launcher, raw client, normaliser and
# transcript runner the test files use (see README "Layout").
#
# daemons.py   start memcached / memcachepy (start_daemon(s) on loopback ephemeral ports;
#              Proc for any other command line: unix sockets, -d, config files)
# rawclient.py Conn (line/value/sentinel readers, stats) and run_steps/run_transcript, the
#              transcript runner of text (`version` sentinel) and meta (`mn`) tests
# normalise.py erases what legitimately differs between two daemons (CAS values, pids,
#              clocks, versions) before replies are compared byte for byte; same_reply
#              allows meta clocks a slack
# pool.py      a cluster of memcachepy nodes sharing one cluster file
