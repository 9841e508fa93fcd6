"""pytest plugin: fixtures that give a test a running virtual terminal (filled in with the terminal)."""
