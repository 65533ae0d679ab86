"""``driftpilot demo``: the whole loop on this machine in about two minutes.

It bootstraps a champion (v1) on concept A of River's Agrawal generator, starts ``driftpilot run`` (API + decision
loop) as a subprocess on the embedded default (SQLite + local MLflow store in ``.driftpilot/demo``), and plays
production: rows are sent to ``/predict`` now and their natural labels to ``/labels`` a little later. The stream goes
A -> B -> A (classification function 0 -> 2 -> 0). The policy (``config/demo.yaml``) has a ``race:`` section: online
learners race the champion on the natural labels and take over when an anytime-valid test says so; batch retrains
join the race as challengers; when A comes back, the version that knew it can win again without any training.

The screen shows the traffic's progress with the live accuracy, each decision the daemon takes as it takes it, and
the race's standings (``controller.race.saved_state.read_standings``) at each change of concept, after each switch and
every few seconds in between. At the end: how long each response took after the concept changed, whether a past
version was re-promoted, the accuracy each version served per concept, the lineage tree and the ``mlflow ui`` command.

The parts, one job each: :mod:`.command` (the command: options, bootstrap, the traffic loop), :mod:`.stream` (the
concepts and the Agrawal stream), :mod:`.screen` (what is printed while the traffic runs, and remembered),
:mod:`.daemon_process` (the ``driftpilot run`` subprocess and the HTTP calls to it) and :mod:`.summary` (the story
and the tables at the end). :mod:`controller.cli.main` imports :mod:`.command`, which registers ``demo``.
"""
