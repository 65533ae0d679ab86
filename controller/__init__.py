"""driftpilot controller package."""
