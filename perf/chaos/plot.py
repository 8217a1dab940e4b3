"""The chaos run's picture: one time axis, every fault shaded over what the load saw.

throughput   arrivals/s (PlaceOrder scheduled), accepted/s, failed/s, confirmed/s
latency      each order's place → terminal time (dots) and its p50/p95 per bucket
outbox       unsent outbox rows per service database (gaps: the database was down)

Each fault is a shaded span from its start to its heal (an instant one, a SIGKILL
of an instance, is a line), labelled on the top panel.
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

from loadgen.driver import Recorder
from loadgen.plot import STATE_COLORS, bucket_seconds, plain_log_scale

TIME_AXIS = "seconds since the first scheduled order"
FAULT_COLORS = ["tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"]
INSTANT_WIDTH = 0.4  # seconds drawn for a fault that heals as it is injected


def _rate(times: Sequence[float], bins: np.ndarray, bucket: float) -> np.ndarray:
    counts, _ = np.histogram(np.asarray(times, dtype=float), bins=bins)
    return np.append(counts, counts[-1] if len(counts) else 0) / bucket


def _shade(axes: Sequence[Axes], faults: Sequence[Mapping[str, Any]]) -> None:
    for i, fault in enumerate(faults):
        color = FAULT_COLORS[i % len(FAULT_COLORS)]
        start, healed = float(fault["start"]), float(fault["healed"])
        for ax in axes:
            ax.axvspan(start, max(healed, start + INSTANT_WIDTH), color=color, alpha=0.18)
        top = axes[0]
        recovery = fault.get("recovery_s")
        note = "never" if recovery is None else f"{recovery:.1f}s"
        top.text(
            start,
            0.98,
            f" {fault['label']} (recovery {note})",
            transform=top.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=color,
        )


def _throughput(ax: Axes, recorder: Recorder, bins: np.ndarray, bucket: float) -> None:
    placed = recorder.calls.get("PlaceOrder", [])
    series = {
        "arrivals/s": ([c.start for c in placed], "grey"),
        "accepted/s": ([c.end for c in placed if c.code == "OK"], "C0"),
        "failed arrivals/s": ([c.end for c in placed if c.code != "OK"], "C3"),
        "confirmed/s": (
            [o.end for o in recorder.sagas if o.state == "CONFIRMED" and o.end is not None],
            "C2",
        ),
    }
    for name, (times, color) in series.items():
        ax.step(bins, _rate(times, bins, bucket), where="post", color=color, label=name)
    ax.set_ylabel(f"per second (per {bucket:g} s)")
    ax.set_title("Throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=4)


def _latency(ax: Axes, recorder: Recorder, bucket: float) -> None:
    done = [o for o in recorder.sagas if o.latency is not None]
    for state in sorted({o.state for o in done}):
        of = [o for o in done if o.state == state]
        ax.scatter(
            [o.start for o in of],
            [(o.latency or 0.0) * 1000 for o in of],
            s=4,
            alpha=0.3,
            linewidths=0,
            color=STATE_COLORS.get(state, "black"),
            label=f"{state} (n={len(of)})",
        )
    if done:
        start = np.array([o.start for o in done])
        ms = np.array([(o.latency or 0.0) * 1000 for o in done])
        slots = np.floor(start / bucket).astype(int)
        xs = [(s + 0.5) * bucket for s in np.unique(slots)]
        for q, style in ((50, ":"), (95, "-")):
            ys = [np.percentile(ms[slots == s], q) for s in np.unique(slots)]
            ax.plot(xs, ys, color="black", linestyle=style, linewidth=1.4, label=f"p{q}")
        ax.set_yscale("log")
        plain_log_scale(ax.yaxis)
    ax.set_ylabel("place → terminal (ms)")
    ax.set_title("Saga latency, by the order's scheduled time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=5)


def _outbox(ax: Axes, samples: Sequence[tuple[float, str, int | None]], origin: float) -> None:
    for i, service in enumerate(sorted({s for _, s, _ in samples})):
        points = [(t - origin, n) for t, s, n in samples if s == service]
        xs = [t for t, _ in points]
        ys = [np.nan if n is None else n for _, n in points]
        ax.plot(xs, ys, color=f"C{i}", linewidth=1.2, label=service)
    ax.set_ylabel("unsent outbox rows")
    ax.set_title("Outbox backlog (sampled every 0.5 s; gaps: database unreachable)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def timeline(
    path: Path,
    report: Mapping[str, Any],
    recorder: Recorder,
    samples: Sequence[tuple[float, str, int | None]],
    *,
    flash_end: float,
) -> None:
    ends = [o.end for o in recorder.sagas if o.end is not None]
    settings = report["settings"]
    span = max([float(settings["flash_seconds"] + settings["steady_seconds"]), *ends])
    bucket = bucket_seconds(span) / 2
    bins = np.arange(0, span + bucket, bucket)
    fig, axes = plt.subplots(3, 1, figsize=(14, 12), sharex=True, height_ratios=[2.2, 2.2, 1.4])
    fig.suptitle(
        f"chaos ({report['profile']}) · {report['settings']['rate']:g} orders/s · "
        f"{'PASS' if report['ok'] else 'FAIL'} · run {report['run_id']}\n{report['line']}",
        fontsize=11,
    )
    _throughput(axes[0], recorder, bins, bucket)
    _latency(axes[1], recorder, bucket)
    _outbox(axes[2], samples, recorder.origin)
    for ax in axes:
        ax.axvline(flash_end, color="black", linestyle="--", linewidth=0.8)
    axes[0].text(
        flash_end,
        0.02,
        " flash sale | steady saga",
        transform=axes[0].get_xaxis_transform(),
        fontsize=8,
    )
    _shade(axes, report["faults"])
    axes[-1].set_xlabel(TIME_AXIS)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=85)
    plt.close(fig)
