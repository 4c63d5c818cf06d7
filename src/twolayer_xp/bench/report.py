"""Turn pytest-benchmark JSON into a markdown table and a bar chart.

    python -m twolayer_xp.bench.report bench.json [--out DIR]

Writes DIR/bench.md and DIR/bench.png (DIR defaults to the JSON's folder) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from twolayer_xp.bench import peer_label


def load(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable pytest-benchmark JSON file ({exc})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path} has no 'benchmarks' list: was it written by --benchmark-json?")
    return data


def step_rows(data: dict) -> list[dict]:
    """One row per (backend, shape, dtype) of our step, with its floor and peer figures."""
    peers = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("implementation") == "peer":
            peers[(info["backend"], tuple(info["shape"]), info["dtype"])] = bench["stats"]["median"]
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("implementation") != "ours":
            continue
        shape, median = tuple(info["shape"]), bench["stats"]["median"]
        peer = peer_label(info["backend"])
        rows.append(
            {
                "backend": info["backend"],
                "shape": shape,
                "dtype": info["dtype"],
                "ms": median * 1e3,
                "samples_per_second": info.get("samples_per_second", shape[0] / median),
                "gflops": info.get("gflops"),
                "x_floor": info.get("x_floor"),
                "x_peer": info.get("x_peer"),
                "peer_ms": peers[(peer, shape, info["dtype"])] * 1e3
                if (peer, shape, info["dtype"]) in peers
                else None,
            }
        )
    rows.sort(
        key=lambda r: (
            r["backend"] != "numpy",
            r["backend"],
            r["shape"][0] * r["shape"][2],
            r["shape"],
            r["dtype"],
        )
    )
    return rows


def other_rows(data: dict) -> list[dict]:
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("implementation") in ("train_loop", "predict"):
            rows.append(
                {"group": bench.get("group") or bench["name"], "median_s": bench["stats"]["median"], **info}
            )
    return rows


def markdown(data: dict) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    lines = [
        f"Measured {data.get('datetime', '')[:19]} on {cpu} ({machine.get('cpu', {}).get('count', '?')} cores), "
        f"Python {machine.get('python_version', '?')}.",
        "",
        "| backend | N, D, H, C | dtype | ms/step | samples/s | GFLOP/s | x floor | vs torch eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in step_rows(data):
        peer = (
            f"{r['x_peer']:.2f}x faster"
            if r["x_peer"] and r["x_peer"] >= 1
            else (f"{1 / r['x_peer']:.2f}x slower" if r["x_peer"] else "n/a")
        )
        lines.append(
            f"| {r['backend']} | {', '.join(map(str, r['shape']))} | {r['dtype']} | {r['ms']:.3f} | "
            f"{r['samples_per_second']:,.0f} | {r['gflops']:.0f} | "
            f"{r['x_floor']:.2f}x | {peer} |"
            if r["gflops"] is not None and r["x_floor"] is not None
            else f"| {r['backend']} | {', '.join(map(str, r['shape']))} | {r['dtype']} | {r['ms']:.3f} | "
            f"{r['samples_per_second']:,.0f} | n/a | n/a | {peer} |"
        )
    others = other_rows(data)
    if others:
        lines += [
            "",
            "| benchmark | backend | median | per iteration | x steps | x (steps + gather) |",
            "|---|---|---|---|---|---|",
        ]
        for r in others:
            if r["implementation"] == "train_loop":
                threads = f" ({r['threads']['count']} thr.)" if r.get("threads") else ""
                lines.append(
                    f"| {r['group']} | {r['backend']}{threads} | {r['median_s']:.2f} s | {r['ms_per_iteration']:.3f} ms | "
                    f"{r['x_steps']:.3f}x | {r['x_steps_plus_gather']:.3f}x |"
                )
            else:
                lines.append(f"| {r['group']} | {r['backend']} | {r['median_s'] * 1e3:.2f} ms | | | |")
    lines += _population_lines(data) + _comparison_lines(data)
    return "\n".join(lines) + "\n"


def _infos(data: dict, implementation: str) -> list[dict]:
    return [
        b["extra_info"]
        for b in data["benchmarks"]
        if b.get("extra_info", {}).get("implementation") == implementation
    ]


def _population_lines(data: dict) -> list[str]:
    """K nets as one Population vs the same K nets one after another (float32)."""
    rows = sorted(_infos(data, "population"), key=lambda r: (r.get("device", "cpu"), r["shape"][1], r["K"]))
    if not rows:
        return []
    lines = [
        "",
        "| population | N, D, H, C | K | sample x nets/s | one net at a time | speed-up | target | page faults/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = f">= {r['target']:g}x" if r.get("target") else ""
        lines.append(
            f"| float32, {r.get('device', 'cpu')} | {', '.join(map(str, r['shape']))} | {r['K']} | {r['sample_nets_per_second']:,.0f} | "
            f"{r['sequential_sample_nets_per_second']:,.0f} | {r['speedup']:.2f}x | {target} | "
            f"{r['page_faults_per_step']:.1f} |"
        )
    return lines


def _comparison_lines(data: dict) -> list[str]:
    """The estimator against MLPClassifier, and a sweep against one net at a time."""
    lines = []
    for r in _infos(data, "sklearn_estimator"):
        lines += [
            "",
            f"TwoLayerClassifier vs MLPClassifier ({r['folds']}-fold CV on digits): accuracy "
            f"{r['accuracy']:.4f} vs {r['mlp_accuracy']:.4f}, fit {r['fit_s']:.2f} s vs {r['mlp_fit_s']:.2f} s "
            f"({r['x_faster_than_mlp']:.1f}x faster).",
        ]
    lines += _threads_lines(data)
    for r in _infos(data, "sweep"):
        lines += [
            "",
            f"Sweep of {r['configurations']} configurations (population {r['population']}, {r['num_iters']} "
            f"iterations each) vs one net at a time: {r['sweep_seconds']:.1f} s vs {r['loop_seconds']:.1f} s "
            f"({r['x_loop']:.2f}x); storage and sampler {100 * r['overhead_fraction']:.1f}% of the sweep.",
        ]
    return lines


def _threads_lines(data: dict) -> list[str]:
    """The thread policy's benchmarks (benchmarks/test_threads.py), with the threads they used."""
    lines = []
    for r in _infos(data, "threads_busy"):
        t = r["threads"]
        lines += ["", f"Digits train beside two busy processes: automatic threads ({t['count']}, {t['source']}) "
                  f"{r['automatic_s']:.2f} s vs one thread forced {r['one_thread_s']:.2f} s: "
                  f"{r['x_one_thread']:.2f}x (target <= {r['target']:g}x)."]  # fmt: skip
    for r in _infos(data, "threads_step"):
        t = r["threads"]
        lines += ["", f"Step {', '.join(map(str, r['shape']))} float32: automatic threads ({t['count']}, "
                  f"{t['source']}) {r['automatic_ms']:.3f} ms vs the libraries' default {r['default_ms']:.3f} ms: "
                  f"{r['x_default']:.2f}x (target <= {r['target']:g}x)."]  # fmt: skip
    for r in _infos(data, "threads_cohosted"):
        used = ", ".join(f"{n} thread{'s' * (n != 1)} with {w} live" for n, w in r["threads_workers"])
        lines += ["", f"Sweep ({r['sweep']}): three workers on one host {r['three_s']:.1f} s vs one alone "
                  f"{r['alone_s']:.1f} s: {r['x_alone']:.2f}x (target <= {r['target']:g}x); trials ran with {used}."]  # fmt: skip
    return lines


def figure(data: dict):
    """Samples/s per shape and dtype: our step on each backend next to PyTorch eager."""
    from matplotlib.figure import Figure

    rows = step_rows(data)
    series = defaultdict(dict)
    for r in rows:
        key = f"{r['shape'][0]}x{r['shape'][2]}\n{r['dtype']}"
        series[f"ours ({r['backend']})"][key] = r["samples_per_second"]
        if r["peer_ms"]:
            peer = peer_label(r["backend"]).replace("-", " ")
            series[peer][key] = r["shape"][0] / (r["peer_ms"] / 1e3)
    keys = list(dict.fromkeys(k for s in series.values() for k in s))
    fig = Figure(figsize=(max(8, 1.2 * len(keys)), 5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [values.get(k, 0) for k in keys], width=width, label=name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys)
    ax.set_yscale("log")
    ax.set(
        title="Training-step throughput (minibatch N x hidden H, D=3072 or 64, C=10)",
        xlabel="shape and dtype",
        ylabel="samples / s (log scale)",
    )
    ax.legend()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twolayer_xp.bench.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("results", help="JSON written by pytest --benchmark-json")
    parser.add_argument("--out", help="folder for bench.md and bench.png (default: next to the JSON)")
    args = parser.parse_args(argv)
    try:
        data = load(args.results)
    except ValueError as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.results).parent
    text = markdown(data)
    from twolayer_xp.app import plots
    from twolayer_xp.io import files

    files.atomic_write(out / "bench.md", lambda f: f.write(text.encode()))
    if step_rows(data):
        plots.save(figure(data), out / "bench.png")
    print(text, end="")
    print(f"(written to {out / 'bench.md'} and {out / 'bench.png'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
