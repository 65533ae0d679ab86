"""The ``driftpilot`` command line (click); ``main`` is the console script's entry point."""
