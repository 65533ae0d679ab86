"""`driftpilot demo` (what `make run` runs) from an empty folder: a real daemon subprocess, traffic through the API on
an A -> B -> A stream, the race on screen (decisions and the racers table), and the closing story and summary —
never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_races_through_a_b_a_and_brings_the_old_version_back(tmp_path: Path) -> None:
    # 10,500 rows at 300 rows/s (the demo's default rate): 2,100 rows of A,
    # 4,200 of B, 4,200 of A again; labels half a second after their rows.
    command = [sys.executable, "-c", "from controller.cli.main import main; main()", "--log-level", "WARNING", "demo",
               "--rows", "10500", "--change-at", "0.2", "--return-at", "0.6", "--rate", "300", "--label-delay", "0.5"]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    output = done.stdout + done.stderr
    (tmp_path / "demo-output.txt").write_text(output)  # kept by pytest's tmp_path retention, for a failure
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert "bootstrap: version 1 is champion" in output
    b_arrives = output.index("concept B arrives (Agrawal function 2)")
    a_returns = output.index("concept A returns (Agrawal function 0)")
    assert b_arrives < a_returns

    # The racers table: a header with the switch threshold, the champion marked, online racers and v1.
    assert re.search(r"racers .+; accuracy on the last labeled rows, a challenger takes over at evidence >= 100",
                     output)
    assert re.search(r"\*\s+v1\s+frozen, the bootstrap version\s+0\.9\d\d\s+\d+\s+champion, serving", output)
    assert re.search(r"\n\s+hat\s+online", output) and re.search(r"\n\s+logreg\s+online", output)

    # B arrives: a racer (or a retrained challenger) beats v1 on the race and takes over.
    switch = re.search(r"race: (\S+) beat v1 \(accuracy 0\.\d+ vs 0\.\d+ on the ([\d,]+ labeled rows of concept B "
                       r"so far|last [\d,]+ labeled rows); evidence \S+ >= 100 after [\d,]+ paired rows\) -> promoted "
                       r"(as )?v\d+", output)
    assert switch is not None, output[b_arrives:b_arrives + 4000]
    assert b_arrives < switch.start()
    # A returns: v1, which knew A, wins the race back without training.
    back = re.search(r"race: \S+ beat .+ -> re-promoted v1 \(it knew concept A\), without any training", output)
    assert back is not None, output[a_returns:a_returns + 4000]
    assert switch.start() < back.start() and a_returns < back.start()
    assert "racers after the switch to v1" in output

    # The story: how long each response took, and that the past version came back.
    story = output[output.index("the story"):]
    assert re.search(r"concept B arrived at row 2,100: (\S+ \(v\d+\)|v\d+) took over from v1 after [\d.]+ s / [\d,]+ "
                     r"rows \(label delay 0\.5 s \+ [\d.]+ s\)", story), story
    assert re.search(r"concept A returned at row 6,300: v1 re-promoted over .+, without training, after [\d.]+ s / "
                     r"[\d,]+ rows \(label delay 0\.5 s \+ [\d.]+ s\)", story), story
    assert "a past version re-promoted when its concept returned: yes, v1 (it knew concept A)" in output
    assert "NO, not in this run" not in output

    assert "served accuracy (natural labels), by version and by concept" in output
    assert re.search(r"(promote|rollback)\s+race\s+switch", output)
    assert "lineage\nv1" in output and "mlflow ui --backend-store-uri sqlite:///.driftpilot/demo/mlflow.db" in output
    # The daemon stopped gracefully and its log is where the demo says.
    log = tmp_path / ".driftpilot" / "demo" / "daemon.log"
    assert log.is_file()
    assert "Traceback" not in log.read_text()
