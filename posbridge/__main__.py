"""``python -m posbridge`` = the ``posbridge`` command."""

from .cli import main

raise SystemExit(main())
