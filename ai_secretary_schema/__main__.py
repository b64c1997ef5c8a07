"""``python -m ai_secretary_schema`` runs the command-line tool."""

import sys

from ai_secretary_schema.cli import main

sys.exit(main())
