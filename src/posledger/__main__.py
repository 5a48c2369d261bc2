"""``python -m posledger``: the command line, as ``posledger`` would run it."""

import sys

from posledger.cli import main

sys.exit(main())
