"""``python -m ttfs_plugin …`` is the ``ttfs`` command."""

import sys

from .cli import main

sys.exit(main())
