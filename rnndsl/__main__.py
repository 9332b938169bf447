"""`python -m rnndsl` is the `rnndsl` command."""

import sys

from .cli import main

sys.exit(main())
