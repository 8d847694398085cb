"""``python -m backend``: the backend's command line (see backend/cli.py)."""

import sys

from .cli import main

sys.exit(main())
