"""Smoke test of the benchmark suite: every workload runs in --quick mode (a handful of
steps, each in its own process as run_all does) and writes a result JSON of the documented
shape; the table and the MoPoE-vs-M figure build from those files. No timing asserts."""
from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RUN_ALL = runpy.run_path(str(BENCH / "run_all.py"), run_name="run_all_under_test")
SCRIPTS = RUN_ALL["SCRIPTS"]
PATH_KEYS = {"step_ms", "samples_per_s", "steps", "windows"}
RUN_KEYS = {"model", "config", "batch_size", "parameters", "lightning", "plain", "lightning_overhead",
            "peak_rss_mb", "rss_within_epoch", "flops_per_sample", "achieved_gflops", "peak_fraction",
            "cpu_per_wall", "seconds"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """{workload: (return code, output)} after running each script with --quick."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = {}
    for name, script in SCRIPTS.items():
        # one thread: a smoke test needs no speed, and on a busy shared machine two OpenMP
        # threads wait on each other at every op (the run takes minutes instead of seconds)
        proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--threads", "1", "--out", str(out)],
                              check=False, capture_output=True, text=True, env=env, timeout=900)
        done[name] = (proc.returncode, proc.stdout + proc.stderr)
    return out, done


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_workload_writes_result_json(quick_results, name):
    out, done = quick_results
    code, output = done[name]
    assert code == 0, output[-3000:]
    result = json.loads((out / f"{name}.json").read_text())
    assert result["workload"] == name and result["quick"] is True
    assert {"machine", "settings", "runs", "targets", "skipped", "seconds"} <= set(result)
    assert result["machine"]["matmul_peak_gflops"] > 0 and result["machine"]["threads"] >= 1
    if not result["runs"]:
        pytest.skip(f"{name}: {result['skipped']}")  # e.g. MNIST files not on this machine
    for run in result["runs"]:
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
        for path in ("lightning", "plain"):
            assert PATH_KEYS <= set(run[path]) and run[path]["step_ms"] > 0 and run[path]["samples_per_s"] > 0
        assert run["flops_per_sample"] > 0 and run["peak_rss_mb"] > 0
        assert {"start_mb", "end_mb", "growth_mb", "growth_pct"} <= set(run["rss_within_epoch"])
        assert all(v > 0 for v in run.get("generation_per_s", {}).values())
    for t in result["targets"]:
        assert set(t) == {"name", "value", "target", "met", "note"} and t["met"] in (True, False, None)
    for s in result["skipped"]:
        assert s["reason"].startswith("skipped")


@pytest.mark.slow
def test_extras_table_and_figure(quick_results, tmp_path):
    out, _ = quick_results
    results = RUN_ALL["load_results"](out)
    assert results, "no result files were written"
    by_name = {r["workload"]: r for r in results}
    if by_name.get("seed-vae", {}).get("runs"):
        assert all("bare" in run and "vs_bare" in run for run in by_name["seed-vae"]["runs"])
    if by_name.get("polymnist-5", {}).get("runs"):
        sweep = by_name["polymnist-5"]["mopoe_vs_m"]
        assert len(sweep["m"]) == len(sweep["mopoe_step_ms"]) == len(sweep["mvae_step_ms"]) >= 2
        assert RUN_ALL["mopoe_figure"](results, tmp_path / "curve.png").stat().st_size > 0
    if by_name.get("mnist-label", {}).get("runs"):
        assert {"lightning", "plain"} == set(by_name["mnist-label"]["mmvae_k_ratio"])
        assert by_name["mnist-label"]["mmvae_epoch"]["end_over_start"] > 0
    text = RUN_ALL["table"](results)
    assert "## Targets" in text and all(r["workload"] in text for r in results)


def test_bench_verb_is_registered_and_finds_the_suite():
    from typer.testing import CliRunner

    from omnivae.cli import app
    from omnivae.cli.bench import find_run_all

    assert find_run_all() == BENCH / "run_all.py"
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output and "--only" in result.output


def test_save_result_stamps_the_time_and_keeps_quick_runs_apart(tmp_path, capsys):
    common = runpy.run_path(str(BENCH / "common.py"), run_name="common_under_test")
    t0 = time.perf_counter() - 2.0
    for quick, summary, file, line in ((False, "", "demo.json", "demo: {} s -> {}"),
                                       (True, "0 runs", "demo_quick.json", "demo: 0 runs, {} s -> {}")):
        result = {"workload": "demo", "quick": quick, "machine": {"cores": 2}, "settings": {}, "runs": [],
                  "targets": [], "skipped": []}
        path = common["save_result"](result, t0, tmp_path, summary)
        assert path == tmp_path / file and json.loads(path.read_text()) == result
        assert result["seconds"] >= 2.0 and list(result)[-1] == "seconds"
        assert capsys.readouterr().out.strip() == line.format(result["seconds"], path)


def test_run_all_rejects_unknown_workload():
    with pytest.raises(SystemExit):
        RUN_ALL["parse_args"](["--only", "no-such-workload"])


@pytest.mark.slow
def test_quality_benchmark_quick_run_scores_open_attributes(tmp_path):
    """bench_quality.py --quick on the partial level: a row per model with its ceiling, both
    generation paths, the open attributes' diversity and a table; the docs' grids stay untouched."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_quality.py"), "--quick", "--threads", "1",
                           "--only", "shapes-partial", "--models", "mopoe", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = json.loads((tmp_path / "quality_quick.json").read_text())["rows"]
    assert [(r["workload"], r["model"]) for r in rows] == [("shapes-partial", "mopoe")]
    row = rows[0]
    assert set(row["by_sampler"]) == {"auto", "posterior"}  # runs fit the conditional prior by default
    assert 0.0 <= row["ceiling"]["image"]["all"] <= 1.0
    # image->caption's ceiling reads only what the real captions name: never the position, so
    # it is at least the all-attributes ceiling of the same classifier on the same images
    captions = row["ceiling_captions"]["text"]
    assert math.isnan(captions["position"]) and not math.isnan(captions["shape"])
    assert row["ceiling"]["image"]["all"] - 1e-9 <= captions["all"] <= 1.0
    named = row["by_sampler"]["auto"]["named_text"]  # what share of captions name each attribute
    assert set(named) == {"real", "image->text"}
    assert named["real"]["position"] == 0.0 and named["real"]["shape"] == 1.0  # the level never names it
    assert all(0.0 <= v <= 1.0 for v in named["image->text"].values())
    opened = row["by_sampler"]["auto"]["open_text->image"]["open"]
    assert "position" in opened and 1 <= opened["position"]["distinct_mean"] <= 4
    assert "| shapes-partial | mopoe |" in proc.stdout
    assert (tmp_path / "quality-grids" / "shapes-partial-mopoe.png").stat().st_size > 1000


@pytest.mark.slow
def test_quality_benchmark_jobs_run_rows_side_by_side(tmp_path):
    """--jobs 2: each row in its own process, the rows back in table order, both scored by the same
    classifiers (trained by one process, read from the shared cache by the other, or trained
    alike by both: one thread, one seed)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_quality.py"), "--quick", "--jobs", "2",
                           "--only", "shapes-partial", "--models", "mvae", "mopoe", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = json.loads((tmp_path / "quality_quick.json").read_text())["rows"]
    assert [(r["workload"], r["model"]) for r in rows] == [("shapes-partial", "mvae"), ("shapes-partial", "mopoe")]
    assert rows[0]["ceiling"] == rows[1]["ceiling"]
    assert "| shapes-partial | mvae |" in proc.stdout and "| shapes-partial | mopoe |" in proc.stdout
    assert all((tmp_path / "quality-grids" / f"shapes-partial-{m}.png").stat().st_size > 1000 for m in ("mvae", "mopoe"))


@pytest.mark.slow
def test_semi_supervised_benchmark_quick_run_scores_both_label_counts(tmp_path):
    """bench_semi_supervised.py --quick: a row per label count with M2's and the classifier-alone
    test accuracy (in [0, 1]) beside the paper's figure."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_semi_supervised.py"), "--quick", "--threads", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "semi-supervised_quick.json").read_text())
    assert result["quick"] is True and result["settings"]["model"]["model"] == "m2"
    if not result["runs"]:
        pytest.skip(f"{result['skipped']}")  # MNIST files not on this machine
    assert [r["labels"] for r in result["runs"]] == [100, 1000]
    for row in result["runs"]:
        assert 0 <= row["m2_accuracy"] <= 1 and 0 <= row["baseline_accuracy"] <= 1
        assert row["paper_m2_accuracy"] > 0.85 and row["steps"] == 60


@pytest.mark.slow
def test_deep_models_benchmark_quick_run(tmp_path):
    """bench_deep_models.py --quick: the flat and ladder VAEs with their IW NLLs and active units per
    layer, and the Fréchet distance of each sampling prior's samples on the flat VAE."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_deep_models.py"), "--quick", "--threads", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "deep-models_quick.json").read_text())
    assert result["workload"] == "deep-models" and result["quick"] is True
    if not result["runs"]:
        pytest.skip(f"{result['skipped']}")  # MNIST files not on this machine
    # the ladder with its default (residual) posterior and the paper's merge, and a flat VAE with a ladder branch
    flat, ladder, merge, branch = result["runs"]
    assert [r["model"] for r in result["runs"]] == ["vae", "ladder_vae", "ladder_vae_merge", "vae_ladder_branch"]
    assert len(flat["active_units"]) == 1 and len(ladder["active_units"]) == 2 == len(merge["active_units"])
    for run in (flat, ladder, merge):
        assert run["iw_nll"] > 0 and run["neg_elbo"] >= run["iw_nll"] - 1.0 and run["k"] == 4
    assert branch["config"]["modalities"]["image"]["ladder"] == [32] and branch["neg_elbo"] > 0
    assert result["neg_elbo_branch_minus_vae"] == pytest.approx(branch["neg_elbo"] - flat["neg_elbo"], abs=0.02)
    assert abs(ladder["parameters"] / flat["parameters"] - 1) < 0.05  # the same budget in weights
    fd = result["frechet"]
    assert fd["prior_configs"]["flow"]["kind"] == "flow"
    assert all(fd[p]["mean"] >= 0 and len(fd[p]["frechet"]) == 1 for p in ("normal", "gmm", "flow"))


@pytest.mark.slow
def test_user_path_benchmark_quick_run_splits_each_command_into_phases(tmp_path):
    """bench_user_path.py --quick: each `omnivae train` command is split into the phases its run
    recorded (they add up to the command's time, less the process's exit), beside a bare training
    script timed the same way."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_user_path.py"), "--quick", "--threads", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "user-path_quick.json").read_text())
    assert [r["workload"] for r in result["runs"]][:2] == ["gray28-captions", "rgb64-captions"]
    for run in result["runs"]:
        phases = run["phases"]
        assert run["steps"] == phases["fit_steps"] == run["bare"]["steps"] > 0
        assert 0 < phases["fit"]["steps_s"] < run["train_run_s"] < run["command_s"] and run["exit_s"] >= 0
        assert run["command_over_bare"] > 0 and run["train_run_over_steps"] >= 1
        # the bare script is a whole process too: its loops are part of its launch-to-exit time
        assert run["bare"]["process_s"] > run["bare"]["seconds"] > 0 and run["bare_fixed_s"] > 0
        assert run["command_over_bare_process"] == pytest.approx(run["command_s"] / run["bare"]["process_s"], abs=1e-3)
    folders = [r for r in result["runs"] if not r["workload"].startswith("mnist-label")]
    assert len(folders) == 2 and len(result["targets"]) == len(result["runs"]) + len(folders)


@pytest.mark.slow
def test_streaming_benchmark_quick_run_samples_memory_of_every_process(tmp_path):
    """bench_streaming.py --quick: the in-memory run, the streamed one with the library's workers (one
    thread on this machine's cores leaves a core free: one worker) and one with two workers train the
    same steps; memory is sampled over all processes and throughput compared."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_streaming.py"), "--quick", "--threads", "1",
                           "--workers", "2", "--out", str(tmp_path)], check=False, capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "streaming_quick.json").read_text())
    memory, streamed, two = result["runs"]
    assert memory["steps"] == streamed["steps"] == two["steps"] == 10
    assert streamed["examples"]["train"] == 1600 and memory["examples"]["train"] == 800
    spare = max(0, min(4, (os.cpu_count() or 1) - 1))
    assert streamed["workers"] == spare and streamed["processes"] == 1 + spare and memory["processes"] == 1
    assert two["workers"] == 2 and two["processes"] == 3  # the training process and its 2 workers
    assert two["memory"]["rss"]["peak_mb"] > two["memory"]["main_rss"]["peak_mb"] > 0
    assert result["stream_over_memory"] > 0 and two["over_in_memory"] > 0 and len(result["targets"]) == 5


@pytest.mark.slow
def test_compile_benchmark_quick_run_times_each_step_variant_and_the_gru(tmp_path):
    """bench_compile.py --quick: eager, compiled objective and whole compiled step on both workloads,
    each with a step time and the compilation's first step; the GRU decoder's call against its loop."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_compile.py"), "--quick", "--threads", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "compile_quick.json").read_text())
    runs = {r["workload"].split(",")[0]: r for r in result["runs"]}
    assert set(runs) == {"mnist-label", "64x64 RGB + captions"}
    steps = runs["mnist-label"]["steps"]  # --quick compiles this workload only
    assert set(steps) == {"eager", "objective", "whole step"} and set(runs["64x64 RGB + captions"]["steps"]) == {"eager"}
    assert all(v["step_ms"] > 0 and v["speedup"] > 0 for v in steps.values())
    assert steps["objective"]["first_step_s"] > steps["eager"]["step_ms"] / 1000  # the compilation
    gru = runs["64x64 RGB + captions"]["gru_decoder"]
    assert gru["one_call_ms"] > 0 and gru["token_loop_ms"] > 0 and gru["tokens"] > 1
    assert "gru_decoder" not in runs["mnist-label"] and len(result["targets"]) == 1


@pytest.mark.slow
def test_memory_format_benchmark_quick_run_times_both_layouts(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_memory_format.py"), "--quick", "--threads", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "memory-format_quick.json").read_text())
    assert len(result["runs"]) == 6 and len(result["targets"]) == 6
    for run in result["runs"]:
        assert run["ms"]["nchw"] > 0 and run["ms"]["channels_last"] > 0
        assert run["speedup"] == pytest.approx(run["ms"]["nchw"] / run["ms"]["channels_last"], rel=0.01)


@pytest.mark.slow
def test_threads_benchmark_quick_run_times_each_count_beside_competitors(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "bench_threads.py"), "--quick", "--loads", "0", "1",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "threads_quick.json").read_text())
    assert [(r["competitors"]) for r in result["runs"]] == [0, 1, 0, 1]
    cores = str(result["settings"]["cores"])
    for run in result["runs"]:
        assert run["ms_per_step"]["1"] > 0 and run["ms_per_step"][cores] > 0
        assert run["all_over_one"] == pytest.approx(run["ms_per_step"]["1"] / run["ms_per_step"][cores], rel=0.01)
    assert subprocess.run(["pgrep", "-f", "a = torch.tanh"], capture_output=True).returncode == 1  # competitors gone
