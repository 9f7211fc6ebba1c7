"""``python -m jobcompd``: the same as the ``jobcompd`` command."""

import sys

from jobcompd.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
