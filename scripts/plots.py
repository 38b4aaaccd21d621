#!/usr/bin/env python3
"""Draws the figures of docs/performance.md from the benchmarks' output.

Reads target/bench/open_overhead.json (benches/open_overhead.rs) and
target/bench/e2e_latency.json (benches/e2e_latency.rs) and writes
docs/img/overhead.png and docs/img/latency.png. Run it through
`bash scripts/dev.sh plots`, which installs the pinned matplotlib into
target/plotvenv first.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"
IMG = ROOT / "docs" / "img"

# Bar colours: the floor and the collector stand out from the peers.
COLOURS = {
    "floor": "#9e9e9e",
    "floor_sys_enter": "#cfcfcf",
    "collector": "#1f77b4",
    "sampler_100": "#8fb8de",
    "sampler_1": "#c6dbef",
    "opensnoop": "#d62728",
    "bpftrace": "#ff7f0e",
}


def load(name):
    path = BENCH / name
    if not path.exists():
        sys.exit(f"plots.py: {path} is missing: run the benchmark first (see docs/performance.md)")
    return json.loads(path.read_text())


def overhead():
    doc = load("open_overhead.json")
    rows = [r for r in doc["rows"] if r["setup"] != "nothing"]
    ops = []
    for r in doc["rows"]:
        if r["op"] not in [o for o, _ in ops]:
            ops.append((r["op"], r["op_name"]))
    fig, axes = plt.subplots(len(ops), 1, figsize=(9, 2.2 + 1.6 * len(ops)), constrained_layout=True)
    for ax, (op, op_name) in zip(axes, ops):
        mine = [r for r in rows if r["op"] == op]
        names = [r["setup_name"] for r in mine]
        wall = [r["vs_nothing_ns"] for r in mine]
        bpf = [r["bpf_above_empty_ns"] for r in mine]
        y = range(len(mine))
        ax.barh([i - 0.2 for i in y], wall, height=0.4,
                color=[COLOURS.get(r["setup"], "#555") for r in mine], label="wall clock added over nothing attached")
        ax.barh([i + 0.2 for i in y], bpf, height=0.4, color="none", edgecolor="black",
                hatch="///", label="BPF run time above an empty program")
        for i, (w, b) in enumerate(zip(wall, bpf)):
            ax.text(max(w, 0), i - 0.2, f" {w:+.0f}", va="center", fontsize=7)
            ax.text(max(b, 0), i + 0.2, f" {b:.0f}", va="center", fontsize=7)
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"{op_name} (nothing attached: "
                     f"{next(r['ns_per_op'] for r in doc['rows'] if r['op'] == op and r['setup'] == 'nothing'):.0f} ns/op)",
                     fontsize=9, loc="left")
        ax.set_xlabel("ns per operation", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Overhead per operation, medians of {doc['rounds']} interleaved rounds "
                 f"({doc['started'][:10]})", fontsize=10)
    out = IMG / "overhead.png"
    fig.savefig(out, dpi=110, metadata={"Software": None})
    print(f"wrote {out.relative_to(ROOT)}")


def latency():
    doc = load("e2e_latency.json")
    fig, (cdf, hist) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for run in doc["runs"]:
        xs = sorted(run["samples_us"])
        if not xs:
            continue
        n = len(xs)
        label = f"{run['rate']}/s: p50 {run['p50_us']:.0f} us, p99 {run['p99_us']:.0f} us"
        cdf.plot(xs, [(i + 1) / n for i in range(n)], label=label)
        hist.hist(xs, bins=[10 * 1.1**k for k in range(0, 90)], histtype="step", label=f"{run['rate']}/s")
    for ax in (cdf, hist):
        ax.set_xscale("log")
        ax.axvline(200, color="green", linestyle="--", linewidth=0.8)
        ax.axvline(2000, color="red", linestyle="--", linewidth=0.8)
        ax.set_xlabel("open() to JSON line written, us (log scale)", fontsize=8)
        ax.tick_params(labelsize=8)
    cdf.axhline(0.5, color="grey", linewidth=0.5)
    cdf.axhline(0.99, color="grey", linewidth=0.5)
    cdf.set_ylabel("fraction of events", fontsize=8)
    cdf.set_title("CDF (dashed: p50 target 200 us, p99 target 2 ms)", fontsize=9, loc="left")
    cdf.legend(fontsize=7, loc="lower right")
    hist.set_ylabel("events per bin", fontsize=8)
    hist.set_yscale("log")
    hist.set_title("distribution", fontsize=9, loc="left")
    hist.legend(fontsize=7)
    fig.suptitle(f"Delivery latency, default config (flush_interval_ms {doc['flush_interval_ms']}), "
                 f"{doc['seconds_per_rate']:.0f} s per rate ({doc['started'][:10]})", fontsize=10)
    out = IMG / "latency.png"
    fig.savefig(out, dpi=110, metadata={"Software": None})
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    IMG.mkdir(parents=True, exist_ok=True)
    overhead()
    latency()
