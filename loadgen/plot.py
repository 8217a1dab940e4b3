"""The picture of one run: latency and throughput over time, and latency histograms.

latency over time     every request (dots) and its p95 per time bucket (lines),
                      the orders' place-to-terminal time, the baseline's p95
throughput over time  OK responses per second per RPC, against what was offered
histograms            per RPC and the bare Check (left); the orders' completion
                      time by terminal state (right)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI or over ssh

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from loadgen.driver import Call, SagaOutcome

SAGA = "saga (place → terminal)"
BASELINE = "Check (baseline)"
# tab10 without its grey, which belongs to the baseline; the saga is black.
PALETTE = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9", "tab:olive", "navy"]
STATE_COLORS = {"CONFIRMED": "C2", "REJECTED": "C1", "CANCELLED": "C3", "UNFINISHED": "black"}
TIME_AXIS = "seconds since the first scheduled request"


def plain_log_scale(axis: Axis) -> None:
    """Milliseconds on a log axis read as 1, 2, 5, 10, 20, 50 ... rather than powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def bucket_seconds(duration: float) -> float:
    """About 40 buckets over the run, at least a quarter of a second each."""
    return max(0.25, round(duration / 40 * 4) / 4)


def _p95_per_bucket(
    start: np.ndarray, latency: np.ndarray, bucket: float
) -> tuple[np.ndarray, np.ndarray]:
    slots = np.floor(start / bucket).astype(int)
    xs, ys = [], []
    for slot in np.unique(slots):
        xs.append((slot + 0.5) * bucket)
        ys.append(np.percentile(latency[slots == slot], 95))
    return np.array(xs), np.array(ys)


def _ms(items: Sequence[Call]) -> np.ndarray:
    return np.array([c.latency * 1000 for c in items], dtype=float)


def _latency_over_time(
    ax: Axes,
    calls: Mapping[str, Sequence[Call]],
    sagas: Sequence[SagaOutcome],
    colors: Mapping[str, str],
    baseline_p95: float | None,
    bucket: float,
) -> None:
    series = {n: (np.array([c.start for c in items]), _ms(items)) for n, items in calls.items()}
    done = [o for o in sagas if o.latency is not None]
    if done:
        series[SAGA] = (
            np.array([o.start for o in done]),
            np.array([(o.latency or 0.0) * 1000 for o in done]),
        )
    for name, (start, latency) in series.items():
        if not len(latency):
            continue
        color = colors.get(name, "black")
        ax.scatter(start, latency, s=5, alpha=0.3, color=color, linewidths=0)
        xs, ys = _p95_per_bucket(start, latency, bucket)
        ax.plot(xs, ys, color=color, linewidth=1.8, label=f"{name} p95")
    if baseline_p95 is not None:
        ax.axhline(
            baseline_p95,
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"{BASELINE} p95 {baseline_p95:.1f} ms",
        )
    ax.set_yscale("log")
    plain_log_scale(ax.yaxis)
    ax.set_xlabel(TIME_AXIS)
    ax.set_ylabel("latency from scheduled time (ms)")
    ax.set_title(f"Latency over time (dots: requests; lines: p95 per {bucket:g} s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=3)


def _throughput_over_time(
    ax: Axes,
    calls: Mapping[str, Sequence[Call]],
    rpcs: Mapping[str, Any],
    colors: Mapping[str, str],
    duration: float,
    bucket: float,
) -> None:
    for name, items in calls.items():
        ends = [c.end for c in items if c.code == "OK"]
        if not ends:
            continue
        bins = np.arange(0, max(duration, max(ends)) + bucket, bucket)
        counts, edges = np.histogram(ends, bins=bins)
        rates = np.append(counts, counts[-1]) / bucket
        ax.step(edges, rates, where="post", color=colors[name], label=name)
        # What the plan asked of this RPC: falling below it is falling behind.
        ax.axhline(rpcs[name]["offered_qps"], color=colors[name], linestyle=":", linewidth=1)
    ax.set_xlabel(TIME_AXIS)
    ax.set_ylabel(f"OK responses / s (per {bucket:g} s)")
    ax.set_title("Throughput over time (dotted: offered rate of each RPC)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=4)


def _log_bins(samples: Sequence[np.ndarray]) -> list[float] | None:
    positive = [s[s > 0] for s in samples if len(s[s > 0])]
    if not positive:
        return None
    low = max(min(float(s.min()) for s in positive), 0.01)
    high = max(float(s.max()) for s in positive)
    return [float(b) for b in np.logspace(np.log10(low), np.log10(high * 1.01 + 0.01), 50)]


def _step_hist(ax: Axes, values: np.ndarray, bins: list[float], **style: Any) -> None:
    ax.hist(
        values,
        bins=bins,
        histtype="step",
        linewidth=1.6,
        weights=np.full(len(values), 100.0 / len(values)),
        **style,
    )


def _rpc_histogram(
    ax: Axes,
    calls: Mapping[str, Sequence[Call]],
    baseline_calls: Sequence[Call],
    colors: Mapping[str, str],
) -> None:
    samples = {n: _ms(items) for n, items in calls.items() if items}
    base = _ms(baseline_calls)
    bins = _log_bins([*samples.values(), base])
    if bins is not None:
        for name, values in samples.items():
            _step_hist(ax, values, bins, color=colors[name], label=f"{name} (n={len(values)})")
        if len(base):
            _step_hist(
                ax, base, bins, color="grey", linestyle="--", label=f"{BASELINE} (n={len(base)})"
            )
    ax.set_xscale("log")
    plain_log_scale(ax.xaxis)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("% of the RPC's requests")
    ax.set_title("RPC latency histogram")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


def _saga_histogram(ax: Axes, sagas: Sequence[SagaOutcome]) -> None:
    by_state: dict[str, np.ndarray] = {}
    for state in sorted({o.state for o in sagas}):
        ms = [(o.latency or 0.0) * 1000 for o in sagas if o.state == state and o.latency]
        if ms:
            by_state[state] = np.array(ms)
    bins = _log_bins(list(by_state.values()))
    if bins is None:
        ax.text(
            0.5,
            0.5,
            "no orders followed to their end",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        for state, values in by_state.items():
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                linewidth=1.6,
                color=STATE_COLORS.get(state, "black"),
                label=f"{state} (n={len(values)})",
            )
        ax.set_xscale("log")
        plain_log_scale(ax.xaxis)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("scheduled PlaceOrder → terminal status seen (ms, log scale)")
    ax.set_ylabel("orders")
    ax.set_title("Order saga completion, by terminal state")
    ax.grid(True, which="both", alpha=0.3)


def plot(
    path: Path,
    report: Mapping[str, Any],
    calls: Mapping[str, Sequence[Call]],
    sagas: Sequence[SagaOutcome],
    baseline_calls: Sequence[Call],
) -> None:
    s = report["settings"]
    duration = float(s["duration"])
    bucket = bucket_seconds(duration)
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(calls))}
    colors[SAGA] = "black"
    fig = plt.figure(figsize=(13, 13))
    grid = fig.add_gridspec(3, 2, height_ratios=[3, 2, 2.6])
    fig.suptitle(
        f"{report['scenario']} ({report['profile']}) · {s['rate']:g}/s for {duration:g}s · "
        f"{s['users']} users · {'PASS' if report['ok'] else 'FAIL'} · run {report['run_id']}",
        fontsize=13,
    )
    _latency_over_time(
        fig.add_subplot(grid[0, :]), calls, sagas, colors, report["baseline"]["p95_ms"], bucket
    )
    _throughput_over_time(
        fig.add_subplot(grid[1, :]), calls, report["rpcs"], colors, duration, bucket
    )
    _rpc_histogram(fig.add_subplot(grid[2, 0]), calls, baseline_calls, colors)
    _saga_histogram(fig.add_subplot(grid[2, 1]), sagas)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=85)
    plt.close(fig)
