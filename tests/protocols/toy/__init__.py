"""The toy protocol's tests: its package (``toyline``), its kit adapter, its registration."""
