"""``python -m postservice.serve``: the production server."""

import sys

from postservice.serve import main

sys.exit(main())
