"""``python -m diswot`` runs the ``diswot`` command (as ``python -m diswot.cli`` does)."""

import sys

from diswot.cli import main

sys.exit(main())
