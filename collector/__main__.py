"""``python -m collector ARGS`` is ``meterlink collector ARGS``."""

import sys

from collector.cli import main

sys.exit(main(sys.argv[1:]))
