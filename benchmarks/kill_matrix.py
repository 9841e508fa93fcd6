"""The full process kill matrix, as a table for the README.

    python benchmarks/kill_matrix.py                 # the full cross product, 384 cells, one run each
    python benchmarks/kill_matrix.py --repeat 3      # three runs per cell
    python benchmarks/kill_matrix.py --ci            # only the CI selection (what the tests run)
    python benchmarks/kill_matrix.py --details       # and every failing run's evidence

Rows: who is killed × operation × step; columns: protocol × transport × recovery timing; a cell is
``runs/lost/double/unresolved``, bold when it fails. The harness is ``tests/e2e/kill_matrix.py``
(what each step and timing means, how the ledgers are compared); the journals and logs of every
run stay in the work folder it prints. Exit status 1 when any cell fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.kill_matrix import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--ci" in argv:
        argv.remove("--ci")
    elif "--full" not in argv:
        argv.insert(0, "--full")
    raise SystemExit(main(argv))
