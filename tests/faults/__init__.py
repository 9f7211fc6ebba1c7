"""The fault matrix: each test sends a known set of records, injects one fault, lets the daemon
recover, consumes the topic and counts (lost must be 0). Every test prints one line

    FAULT <name> sent=… arrived=… lost=… duplicates=… dead_lettered=…

which ``pytest tests/faults -rP | grep ^FAULT`` collects. ``JOBCOMPD_SOAK=1`` runs the long
versions (``make soak``); ``JOBCOMPD_FAULT_LOG=<file>`` also appends every line to that file.
"""
