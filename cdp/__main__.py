"""`python -m cdp`: the same as the `cdp` console script."""

import sys

from cdp.cli import main

sys.exit(main())
