"""``python -m jobcompd``: the same as the ``jobcompd`` command."""

import sys

from jobcompd.cli import main

# Guarded: the parsing worker (jobcompd.parsepool, "spawn") imports the main module again.
if __name__ == "__main__":
    sys.exit(main())
