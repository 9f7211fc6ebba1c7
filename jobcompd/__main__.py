"""``python -m jobcompd``: the same as the ``jobcompd`` command."""

import sys

from jobcompd.cli import main

sys.exit(main())
