"""driftpilot lineage package."""
