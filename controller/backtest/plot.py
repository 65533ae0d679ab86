"""A backtest's plot: the rolling metric over the stream with change points, decisions and the champion; with a
race, a panel of each racer's rolling metric and a strip of which racer served (matplotlib on the Agg canvas)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller.backtest.page import metric_label, race_metric_label
from controller.backtest.quality import race_metric as race_metric_of
from controller.backtest.quality import (
    race_switches,
    racer_keys,
)
from controller.backtest.result import BacktestResult
from controller.backtest.summary import TRAINING_ACTIONS, metric_value, number, was_held
from monitors.metrics import HIGHER_IS_BETTER

# ------------------------------------------------------------------------------------------------------------ plot

VERDICT_STYLE = {  # marker, colour, legend label
    "promote": ("^", "#1a9850", "promoted"),
    "reject": ("X", "#d73027", "rejected"),
    "hold": ("o", "#fdae61", "held (waiting for labels)"),
    "failed": ("x", "#555555", "failed"),
    "rollback": ("v", "#7b3294", "rollback"),
    "race": ("P", "#35978f", "joined the race"),
}


DETECTION_COLOUR = "#e08214"


def rolling_window(served_rows: int) -> int:
    """Rows of the rolling mean in the plot: a 25th of the served stream, between 20 and 500."""
    return int(min(500, max(20, served_rows // 25)))


def plot(result: BacktestResult, path: Path, *, window: int | None = None, race_metric: str | None = None) -> Path:
    """The rolling prequential metric over stream position; change points, decisions and the champion; with a race,
    each racer's rolling metric and which racer served (PNG)."""
    fig = figure(result, window=window, race_metric=race_metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def figure(result: BacktestResult, *, window: int | None = None, race_metric: str | None = None) -> Any:
    """The plot as a matplotlib Figure (Agg canvas, no pyplot state): the metric panel above the champion panel;
    with a race, the racers' panel and the served-by strip between them (``race_metric`` as in :func:`summarize`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    served = result.served
    window = window or rolling_window(len(served))
    raced = result.race is not None and "racer" in served
    fig = Figure(figsize=(12, 10.2 if raced else 6.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    if raced:
        top, race_panel, strip, bottom = fig.subplots(4, 1, sharex=True, gridspec_kw={
            "height_ratios": [3.2, 2.8, 0.5, 1]})
    else:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 1]})
    positions = served["position"].to_numpy()
    rolling = served["score"].rolling(window, min_periods=max(1, window // 2)).mean().to_numpy()
    name = metric_label(result.metric)
    better = "higher is better" if result.metric in HIGHER_IS_BETTER else "lower is better"
    top.plot(positions, rolling, color="#2166ac", linewidth=1.4, label=f"{name}, rolling {window} rows")
    top.axhline(result.value, color="#2166ac", linewidth=0.8, linestyle=":", alpha=0.8,
                label=f"overall {result.value:.3f}")
    top.axvspan(0, result.bootstrap_rows, color="#dddddd", alpha=0.6, linewidth=0)
    top.text(result.bootstrap_rows / 2, 0.98, "bootstrap", transform=top.get_xaxis_transform(), ha="center",
             va="top", fontsize=8, color="#555555")

    handles = [Line2D([], [], color="#2166ac", linewidth=1.4, label=f"{name}, rolling {window} rows"),
               Line2D([], [], color="#2166ac", linewidth=0.8, linestyle=":", label=f"overall {result.value:.3f}")]
    for ax in (top, bottom, *((race_panel, strip) if raced else ())):
        for point in result.spec.change_points:
            ax.axvline(point, color="#000000", linestyle="--", linewidth=1.0, alpha=0.7)
    if result.spec.change_points:
        handles.append(Line2D([], [], color="#000000", linestyle="--", linewidth=1.0, label="known change point"))
    if result.detections:
        # A rug along the bottom of the metric panel: the ticks whose concept-drift detector fired.
        top.plot(result.detections, [0.03] * len(result.detections), linestyle="none", marker="|", markersize=12,
                 markeredgewidth=2, color=DETECTION_COLOUR, transform=top.get_xaxis_transform(), zorder=4)
        handles.append(Line2D([], [], linestyle="none", marker="|", markersize=10, markeredgewidth=2,
                              color=DETECTION_COLOUR, label="concept drift detected"))

    def value_at(position: int) -> float:
        i = int(np.searchsorted(positions, position, side="right")) - 1
        if 0 <= i < len(rolling) and np.isfinite(rolling[i]):
            return float(rolling[i])
        return float(np.nanmean(rolling)) if np.isfinite(rolling).any() else 0.0

    seen: set[str] = set()
    for d in result.decisions:
        if d["status"] == "skipped" or d["action"] not in (*TRAINING_ACTIONS, "rollback", "promote"):
            continue
        at = d.get("verdict_position", d["position"])
        if d["action"] == "rollback":
            kind = "rollback"
        elif d["status"] == "failed":
            kind = "failed"
        elif was_held(d):
            # The hold: from the training to the verdict (or the end of the stream), drawn as a band.
            end = at if d["verdict"] != "hold" else int(positions[-1]) if len(positions) else at
            top.plot([d["position"], end], [value_at(d["position"])] * 2, color=VERDICT_STYLE["hold"][1],
                     linewidth=3, alpha=0.8, solid_capstyle="butt", zorder=3)
            marker, colour, _ = VERDICT_STYLE["hold"]
            top.scatter([d["position"]], [value_at(d["position"])], marker=marker, color=colour, s=36, zorder=4,
                        edgecolors="black", linewidths=0.5)
            seen.add("hold")
            kind = d["verdict"] if d["verdict"] in ("promote", "reject") else None
        else:
            kind = d["verdict"] if d["verdict"] in VERDICT_STYLE else None
        if kind is None:
            continue
        marker, colour, _ = VERDICT_STYLE[kind]
        top.scatter([at], [value_at(at)], marker=marker, color=colour, s=70, zorder=5,
                    edgecolors="black" if marker != "x" else None, linewidths=0.6 if marker != "x" else 2.0)
        seen.add(kind)
    handles += [Line2D([], [], marker=VERDICT_STYLE[k][0], color=VERDICT_STYLE[k][1], markeredgecolor="black",
                       markeredgewidth=0.5, linestyle="none", markersize=8, label=VERDICT_STYLE[k][2])
                for k in VERDICT_STYLE if k in seen]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=min(8, len(handles)), frameon=False)
    top.set_ylabel(f"prequential {name}\n({better})")
    top.grid(True, alpha=0.3)
    rollbacks = sum(d["action"] == "rollback" and d["status"] == "done" for d in result.decisions)
    if raced:
        checkpoints = sum(d["action"] == "checkpoint" and d["status"] == "done" for d in result.decisions)
        what = (f"{_plural(len(race_switches(result)), 'race switch', 'race switches')}, "
                f"{_plural(checkpoints, 'checkpoint')}")
    else:
        what = f"{_plural(len(result.promotions()), 'promotion')}, {_plural(rollbacks, 'rollback')}"
    fig.suptitle(f"{_short_policy(result.policy_name)} on {result.spec.name}: {name} {result.value:.4f} over "
                 f"{len(served):,} served rows · {_plural(len(result.retrains()), 'retrain')}, {what}", fontsize=11)
    if raced:
        _draw_race(result, race_panel, strip, race_metric or race_metric_of(result))

    # The champion over the stream: a step line of its version, each period shaded in the top panel too.
    if len(served):
        versions = served["version"].astype(str).to_numpy()
        order = list(dict.fromkeys(versions))
        level = {v: i for i, v in enumerate(order)}
        y = np.array([level[v] for v in versions])
        bottom.step(positions, y, where="post", color="#333333", linewidth=1.5)
        bottom.set_yticks(range(len(order)), [f"v{v}" for v in order])
        bottom.set_ylim(-0.6, len(order) - 0.4)
        changes = np.flatnonzero(versions[1:] != versions[:-1]) + 1
        starts = [0, *changes.tolist()]
        ends = [*changes.tolist(), len(versions)]
        shades = ["#f7f7f7", "#e6f0fa"]
        for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
            left, right = positions[a], positions[b - 1] + 1
            top.axvspan(left, right, color=shades[n % 2], alpha=0.7, linewidth=0, zorder=0)
    bottom.set_ylabel("champion")
    bottom.set_xlabel("stream row")
    bottom.grid(True, axis="x", alpha=0.3)
    bottom.set_xlim(0, int(positions[-1]) + 1 if len(positions) else result.bootstrap_rows)
    return fig


#: Racer colours, none of them a decision marker's (green, red, purple) nor the served metric's blue.
RACER_COLOURS = ("#ff7f0e", "#1f77b4", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79",
                 "#e7ba52", "#843c39", "#a55194", "#637939")


def race_window(rows: int) -> int:
    """Rows of each racer's rolling metric in the plot: a tenth of the race's rows, between 20 and 500."""
    return int(min(500, max(20, rows // 10)))


def _draw_race(result: BacktestResult, panel: Any, strip: Any, metric: str) -> None:
    """Each racer's rolling metric on the rows it predicted (thick: it served at some point), switch lines, and the
    strip of which racer served each stretch, in the racer's colour."""
    from matplotlib.lines import Line2D

    assert result.race is not None
    log = result.race.sort_values("position")
    served = result.served
    serving = served["racer"].astype(str).to_numpy()
    keys = racer_keys(result)
    keys += [k for k in dict.fromkeys(serving) if k not in keys]
    colour = {k: RACER_COLOURS[i % len(RACER_COLOURS)] for i, k in enumerate(keys)}
    # Registered versions (v<N>) dashed, the policy's online racers solid; past a palette's worth, dotted.
    dashes = {k: ":" if i >= len(RACER_COLOURS) else (0, (5, 1.5)) if _is_version_key(k) else "-"
              for i, k in enumerate(keys)}
    served_rows = Counter(serving)
    window = race_window(len(log))
    positions = log["position"].to_numpy()
    label = race_metric_label(metric)
    higher = metric in HIGHER_IS_BETTER
    curves = {}
    for key in keys:
        scores = log[key] if key in log.columns else pd.Series(np.nan, index=log.index)
        rolling = scores.rolling(window, min_periods=max(1, window // 2)).mean().to_numpy()
        rolling[scores.isna().to_numpy()] = np.nan  # drawn only where the racer predicted
        curves[key] = (np.sqrt(rolling) if metric == "rmse" else rolling, metric_value(metric, number(scores.mean())))
    low, high, off = _race_limits({k: c for k, (c, _) in curves.items()}, [k for k in keys if served_rows[k]])
    handles = []
    for key in keys:
        rolling, mean = curves[key]
        width = 2.2 if served_rows[key] else 1.1
        panel.plot(positions, rolling, color=colour[key], linestyle=dashes[key], linewidth=width,
                   alpha=1.0 if served_rows[key] else 0.85)
        text = f"{key}: {_fmt_short(mean)}" + (f", served {served_rows[key]:,}" if served_rows[key] else "")
        if key in off:
            text += f" ({off[key]} the panel)"
        handles.append(Line2D([], [], color=colour[key], linestyle=dashes[key], linewidth=width, label=text))
    if low is not None and high is not None:
        panel.set_ylim(low, high)
    for side, y, va in (("below", 0.02, "bottom"), ("above", 0.98, "top")):
        names = [k for k, where in off.items() if where == side]
        if names:
            arrow = "↓" if side == "below" else "↑"
            panel.text(0.005, y, f"{arrow} {', '.join(names)}: {side} this range", transform=panel.transAxes,
                       fontsize=8, va=va, ha="left", color="#444444")
    for d in race_switches(result):
        style = VERDICT_STYLE["rollback" if d["action"] == "rollback" else "promote"]
        for ax in (panel, strip):
            ax.axvline(d["position"], color=style[1], linewidth=1.0, alpha=0.9, zorder=3)
        panel.plot([d["position"]], [1.0], marker=style[0], color=style[1], markeredgecolor="black",
                   markeredgewidth=0.5, markersize=8, linestyle="none", transform=panel.get_xaxis_transform(),
                   clip_on=False, zorder=5)
    better = "higher is better" if higher else "lower is better"
    panel.set_ylabel(f"each racer's {label}\n(rolling {window} rows,\n{better})")
    panel.grid(True, alpha=0.3)
    panel.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                 title=f"racer: {label} on the rows it\npredicted, rows served\n(dashed: a registered version)",
                 title_fontsize=8, alignment="left")

    # Which racer served: one band per stretch, named when it is wide enough to hold the name.
    positions = served["position"].to_numpy()
    strip.axvspan(0, result.bootstrap_rows, color="#dddddd", alpha=0.6, linewidth=0)
    if len(positions):
        changes = np.flatnonzero(serving[1:] != serving[:-1]) + 1
        span = positions[-1] + 1 - positions[0]
        for a, b in zip([0, *changes.tolist()], [*changes.tolist(), len(serving)], strict=True):
            left, right = positions[a], positions[b - 1] + 1
            strip.axvspan(left, right, color=colour[serving[a]], linewidth=0, zorder=1)
            if right - left > 0.05 * span:
                strip.text((left + right) / 2, 0.5, serving[a], ha="center", va="center", fontsize=8, zorder=2,
                           color="white" if _dark(colour[serving[a]]) else "black")
    strip.set_yticks([])
    strip.set_ylim(0, 1)
    strip.set_ylabel("served by", rotation=0, ha="right", va="center")


def _race_limits(curves: dict[str, np.ndarray], served: list[str]) -> tuple[float | None, float | None,
                                                                             dict[str, str]]:
    """The racers panel's y range, and the racers left outside it: one whose median is further from the served
    racers' range than that range is wide (a no-change baseline at chance level) would squash the others flat."""
    def finite(key: str) -> np.ndarray:
        values = curves[key]
        return values[np.isfinite(values)]

    core = [finite(k) for k in served if len(finite(k))]
    if not core:
        return None, None, {}
    values = np.concatenate(core)
    lo, hi = np.percentile(values, [2, 98])
    width = max(hi - lo, 1e-9)
    off: dict[str, str] = {}
    kept = []
    for key in curves:
        values = finite(key)
        if not len(values):
            continue
        median = float(np.median(values))
        if median < lo - width:
            off[key] = "below"
        elif median > hi + width:
            off[key] = "above"
        else:
            kept.append(values)
    shown = np.concatenate(kept)
    low, high = float(np.min(shown)), float(np.max(shown))
    pad = 0.05 * max(high - low, 1e-9)
    return low - pad, high + pad, off


def _is_version_key(key: str) -> bool:
    return key[:1] == "v" and key[1:].isdigit()


def _dark(colour: str) -> bool:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.55


def _fmt_short(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def _short_policy(name: str) -> str:
    return Path(name).name if "/" in name else name

