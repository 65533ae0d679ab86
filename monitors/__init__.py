"""driftpilot monitors package."""
