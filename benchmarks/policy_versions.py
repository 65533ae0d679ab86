"""Compare `auto` across policy versions from the raw JSON files that ``benchmarks/policies.py`` writes.

    .venv/bin/python benchmarks/policy_versions.py --seeds 0,1 v3=docs/benchmarks-policies.json \
        v4=/tmp/scenarios-v4.json,/tmp/elec2-v4.json

Prints one Markdown row per stream: metric (mean over seeds); promotions (harmful), rollbacks (sums over seeds);
retrains and CPU seconds (means per run). A version may list several files (e.g. the scenarios and Elec2 runs).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(files: list[Path], seeds: set[int] | None) -> dict[str, dict[str, list[float]]]:
    by_stream: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in files:
        for run in json.loads(path.read_text())["runs"]:
            if run["policy"] != "auto" or (seeds is not None and run["seed"] not in seeds):
                continue
            extra, row = run["extra"], by_stream[run["stream"]]
            row["metric"].append(run["value"])
            row["retrains"].append(run["retrains"])
            row["cpu"].append(run["cpu_seconds"])
            for key in ("promotions", "harmful", "rollbacks"):
                row[key].append(extra[key])
    return by_stream


def cell(row: dict[str, list[float]] | None) -> str:
    if not row:
        return "—"
    runs = len(row["metric"])
    return (f"{sum(row['metric']) / runs:.4f}; {sum(row['promotions']):.0f} ({sum(row['harmful']):.0f}); "
            f"{sum(row['rollbacks']):.0f}; {sum(row['retrains']) / runs:.1f}; {sum(row['cpu']) / runs:,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", metavar="NAME=FILE[,FILE...]")
    parser.add_argument("--seeds", default=None, metavar="0,1,...",
                        help="only these seeds, comma-separated (compare versions on the seeds they all ran)")
    args = parser.parse_args()
    seeds = {int(seed) for seed in args.seeds.split(",")} if args.seeds else None
    versions = []
    for spec in args.versions:
        name, _, files = spec.partition("=")
        if not files:
            parser.error(f"{spec!r}: write NAME=FILE[,FILE...]")
        versions.append((name, load([Path(f) for f in files.split(",")], seeds)))
    streams = list(dict.fromkeys(s for _, by_stream in versions for s in by_stream))
    print("| stream | " + " | ".join(f"{name}: metric; promotions (harmful); rollbacks; retrains; CPU s"
                                     for name, _ in versions) + " |")
    print("|---|" + "---|" * len(versions))
    for stream in streams:
        print(f"| {stream} | " + " | ".join(cell(by_stream.get(stream)) for _, by_stream in versions) + " |")


if __name__ == "__main__":
    main()
