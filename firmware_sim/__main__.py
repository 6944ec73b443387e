"""``python -m firmware_sim ...`` == ``meterlink sim ...``."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
