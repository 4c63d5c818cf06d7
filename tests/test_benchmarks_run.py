"""The benchmark files run once, untimed, on the small shape, so they cannot rot; and the report
turns their JSON into the README's table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "TWOLAYER_XP_BENCH_QUICK": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "benchmarks"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-min-rounds=1",
            f"--benchmark-json={out / 'bench.json'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_every_benchmark_ran(quick_results):
    data = json.loads((quick_results / "bench.json").read_text())
    kinds = {b["extra_info"].get("implementation") for b in data["benchmarks"]}
    assert {"ours", "floor", "predict", "train_loop", "population", "sklearn_estimator", "sweep"} <= kinds
    assert {
        "threads_busy",
        "threads_step",
        "threads_cohosted",
        "compaction",
        "sweep_search",
        "sweep_pruning",
    } <= kinds
    ours = [b for b in data["benchmarks"] if b["extra_info"].get("implementation") == "ours"]
    assert all(b["extra_info"]["x_floor"] > 0 and b["extra_info"]["gflops"] > 0 for b in ours)


def test_report_table_and_chart(quick_results, capsys):
    from twolayer_xp.bench import report as bench_report

    assert bench_report.main([str(quick_results / "bench.json")]) == 0
    table = (quick_results / "bench.md").read_text()
    assert "| numpy | 64, 64, 100, 10 | float32 |" in table and "x floor" in table
    assert "| float32, cpu | 100, 64, 128, 10 | 4 |" in table  # the population rows
    assert "TwoLayerClassifier vs MLPClassifier" in table and "Sweep of 4 configurations" in table
    assert "beside two busy processes: automatic threads (1, automatic)" in table
    assert "three workers on one host" in table
    assert (quick_results / "bench.png").stat().st_size > 10_000
    assert table in capsys.readouterr().out


def test_report_rejects_other_json(tmp_path, capsys):
    from twolayer_xp.bench import report as bench_report

    (tmp_path / "x.json").write_text('{"not": "a benchmark file"}')
    assert bench_report.main([str(tmp_path / "x.json")]) == 2
    assert "no 'benchmarks' list" in capsys.readouterr().err


def test_devices_are_compared_on_steps_queued_as_training_queues_them(monkeypatch):
    """The notebook's CPU-vs-GPU figure synchronized the device after every step, adding the
    GPU's launch and sync latency to each one, which the training loop (a sync every 100 steps)
    hides. Steps now run STEPS_PER_SYNC in a row, then one sync, and the time is per step."""
    from twolayer_xp.backend.numpy_lib import NumpyBackend
    from twolayer_xp.bench import timing

    calls = []
    monkeypatch.setattr(timing.kernels, "sgd_step", lambda *args: calls.append("step"))
    monkeypatch.setattr(NumpyBackend, "synchronize", lambda self: calls.append("sync"))
    monkeypatch.setattr(
        timing, "time_interleaved", lambda fns, **_: {n: (fn(), 0.5)[1] for n, fn in fns.items()}
    )
    (row,) = timing.compare_devices(["cpu"], shape=timing.SHAPES["small"])
    assert calls == ["step"] * timing.STEPS_PER_SYNC + ["sync"] and timing.STEPS_PER_SYNC > 1
    assert row["ms_per_step"] == 500 / timing.STEPS_PER_SYNC
