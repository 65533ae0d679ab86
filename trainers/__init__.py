"""driftpilot trainers package."""
