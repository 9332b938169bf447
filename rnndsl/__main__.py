"""`python -m rnndsl` is the `rnndsl` command."""

import sys

from .cli.main import main

sys.exit(main())
