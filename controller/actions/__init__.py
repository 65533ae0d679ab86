"""What can be done to one model, each a verb on store windows and the registry: bootstrap, retrain (refresh), learn (incremental), monitor, batch predict."""
