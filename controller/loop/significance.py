"""The gate's one-sided paired tests: exact McNemar (classification) and a seeded paired bootstrap (regression).

Pure functions of the paired rows; which one a verdict uses, and why the test does not depend on the gate metric, is
in :mod:`controller.loop.gate`'s docstring.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

__all__ = ["mcnemar_exact", "paired_bootstrap"]

# The bootstrap draws at most this many row indices at once (int32 indices + float64 gathered losses, about
# 12 MB), so memory stays flat at any sample size; the p-value depends on (seed, resamples, rows) only.
_BOOTSTRAP_CHUNK = 1 << 20


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value, P(Binomial(b + c, 1/2) >= c); 1.0 without discordant rows.

    >>> round(mcnemar_exact(2, 10) * 4096)
    79
    """
    if b + c == 0:
        return 1.0
    return float(binomtest(c, b + c, 0.5, alternative="greater").pvalue)


def paired_bootstrap(
    improvement: np.ndarray, resamples: int, seed: int, *, chunk: int = _BOOTSTRAP_CHUNK
) -> tuple[float, np.ndarray]:
    """p-value that the mean per-row improvement is <= 0, and the ``resamples`` resampled means.

    ``p = (#{resampled mean <= 0} + 1) / (resamples + 1)``. Indices are drawn at most ``chunk`` at a time so memory
    stays bounded at any number of rows (the result depends on ``chunk`` too: keep the default for stored verdicts).
    """
    d = np.ascontiguousarray(improvement, dtype=np.float64)
    n = len(d)
    rng = np.random.default_rng(seed)
    index_type = np.int32 if n < 2**31 else np.int64
    means = np.empty(resamples)
    if n == 0:
        raise ValueError("the paired bootstrap needs at least one row")
    if n <= chunk:
        per_chunk = chunk // n
        for start in range(0, resamples, per_chunk):
            k = min(per_chunk, resamples - start)
            means[start:start + k] = np.take(d, rng.integers(0, n, size=(k, n), dtype=index_type)).mean(axis=1)
    else:
        for b in range(resamples):
            total = 0.0
            for start in range(0, n, chunk):
                size = min(chunk, n - start)
                total += float(np.take(d, rng.integers(0, n, size=size, dtype=index_type)).sum())
            means[b] = total / n
    p = (int(np.count_nonzero(means <= 0)) + 1) / (resamples + 1)
    return p, means
