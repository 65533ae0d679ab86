"""The decision loop: policy rules, strategy choice, promotion gate, candidate pool, probation, the tick and the daemon."""
