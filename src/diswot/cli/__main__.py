"""``python -m diswot.cli`` runs the ``diswot`` command."""

import sys

from diswot.cli import main

sys.exit(main())
