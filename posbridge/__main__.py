"""``python -m posbridge`` = the ``posbridge`` command."""

from posbridge.cli import main

raise SystemExit(main())
