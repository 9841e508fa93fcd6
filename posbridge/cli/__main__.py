"""``python -m posbridge.cli`` = the ``posbridge`` command."""

from posbridge.cli.main import main

raise SystemExit(main())
