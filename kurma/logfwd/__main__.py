"""`python3 -m kurma.logfwd`: see `kurma.logfwd._main`."""

import sys

from ._main import main

sys.exit(main())
