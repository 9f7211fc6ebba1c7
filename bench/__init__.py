"""jobcompd's benchmarks: ``python -m bench`` (``make bench``) prints one table.

Each benchmark runs against real parts -- a Tansu broker on loopback, the daemon as its own
process, the real hook -- and reports the median of several runs beside the ceilings of the
same machine measured in the same run. They never pass or fail on time: a slow number is a
result to read, not an error.

Modules: ``ceilings`` (1), ``drain`` (2), ``latency`` (3), ``backlog`` (4), ``hook`` (5),
``shutdown`` (6); ``workload`` makes the records, ``harness`` the parts, ``machine`` describes
the machine.
"""
