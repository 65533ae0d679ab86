"""What the demo sends: the concepts (A -> B -> A) and River's Agrawal stream that plays them, in batches of
``BATCH`` rows per request."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

#: Rows per /predict request (and per label post).
BATCH = 100


@dataclass(frozen=True)
class Concept:
    """One stretch of the traffic: Agrawal classification ``function`` from traffic row ``start`` on."""

    name: str       # "A", "B"
    label: str      # how the summary names the stretch: "A", "B", "A again"
    function: int
    start: int


def agrawal_stream(policy: Any, bootstrap_rows: int, rows: int, concepts: list[Concept], *, seed: int) -> Any:
    """The bootstrap rows (concept A) then the traffic, concept after concept, as one frame with the policy's
    target name; categorical features as strings (as a client would send them)."""
    import pandas as pd
    from river import datasets

    def generator(function: int, offset: int) -> Any:
        return iter(datasets.synth.Agrawal(classification_function=function, seed=seed + offset, perturbation=0.05))

    first = generator(concepts[0].function, 0)
    parts = [itertools.islice(first, bootstrap_rows)]
    ends = [c.start for c in concepts[1:]] + [rows]
    for n, (concept, end) in enumerate(zip(concepts, ends, strict=True)):
        source = first if n == 0 else generator(concept.function, n)  # the bootstrap's concept A continues
        parts.append(itertools.islice(source, end - concept.start))
    pairs = list(itertools.chain(*parts))
    frame = pd.DataFrame([x for x, _ in pairs])
    for name, kind in policy.feature_types.items():
        if kind == "categorical":
            frame[name] = frame[name].astype(str)
    frame[policy.target.name] = [int(y) for _, y in pairs]
    return frame
