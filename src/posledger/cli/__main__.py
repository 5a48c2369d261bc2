"""``python -m posledger.cli``: the same as the ``posledger`` command."""

import sys

from posledger.cli import main

sys.exit(main())
