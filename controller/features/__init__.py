"""Feature serving: feature views, the online store (Redis / SQLite), materialization of batch views, the lookup and
join of /predict, and the stream processor of near-real-time aggregates. See docs/architecture.md, "Feature views".

Modules are imported where used (``controller.config`` imports ``controller.features.config`` while it loads).
"""
