"""Run the benchmark workloads, each in its own process (so peak memory and global torch
settings belong to one workload), then write benchmarks/results/table.md from every result
JSON present and the MoPoE-vs-M curve docs/mopoe_vs_m.png.

    python benchmarks/run_all.py [--quick] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURE = HERE.parent / "docs" / "mopoe_vs_m.png"
SCRIPTS = {"mnist-label": "bench_mnist_label.py", "polymnist-5": "bench_polymnist.py",
           "seed-vae": "bench_seed_vae.py", "shapes-captions": "bench_shapes_captions.py"}


def run_workload(name: str, quick: bool, out: Path, threads: int | None = None) -> int:
    cmd = [sys.executable, str(HERE / SCRIPTS[name]), "--out", str(out), *(["--quick"] if quick else []),
           *(["--threads", str(threads)] if threads else [])]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, check=False).returncode


def load_results(out: Path) -> list[dict]:
    found = [out / f"{name}.json" for name in SCRIPTS]
    return [json.loads(p.read_text()) for p in found if p.is_file()]


def fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return f"{value:,.{digits}f}"


COLUMNS = ["workload", "model", "Lightning samples/s", "plain samples/s", "Lightning / plain", "vs bare",
           "MFLOP / sample", "GFLOP/s", "% of peak", "peak RSS MB", "data / state / step MB", "growth / step",
           "RSS growth %", "generation samples/s", "CPU / wall"]


def run_row(result: dict, run: dict) -> list[str]:
    bare = run.get("vs_bare", {}).get("lightning")
    generation = ", ".join(f"{k} {fmt(v)}" for k, v in run.get("generation_per_s", {}).items())
    name = result["workload"] + (" (quick)" if result.get("quick") else "")
    return [name, run["model"], fmt(run["lightning"]["samples_per_s"]), fmt(run["plain"]["samples_per_s"]),
            fmt(run["lightning_overhead"], 2), fmt(bare, 2), fmt(run["flops_per_sample"] / 1e6, 1),
            fmt(run["achieved_gflops"], 1), fmt(100 * run["peak_fraction"], 0), fmt(run["peak_rss_mb"]),
            memory_cell(run.get("memory")), fmt(run.get("memory", {}).get("growth_in_activations"), 1),
            fmt(run["rss_within_epoch"]["growth_pct"], 1), generation or "-", fmt(run["cpu_per_wall"], 2)]


def memory_cell(memory: dict | None) -> str:
    if not memory:
        return "-"
    data = memory["data_mb"] + memory.get("raw_data_mb", 0.0)
    return f"{fmt(data)} / {fmt(memory['state_mb'], 1)} / {fmt(memory['activations_mb'], 1)}"


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def table(results: list[dict]) -> str:
    """The results as markdown: one row per model run, then the targets, then the extras."""
    lines = ["# Benchmark results", ""]
    for r in results:
        m = r["machine"]
        lines.append(f"- {r['workload']}: {r['started']}, {m['cpu']}, {m['threads']} threads, torch {m['torch']}, "
                     f"matmul peak {m['matmul_peak_gflops']} GFLOP/s, load average {m['load_avg'][0]:.1f}, "
                     f"{r.get('seconds', '?')} s")
    lines += ["", "## Training and generation", ""]
    lines += markdown(COLUMNS, [run_row(r, run) for r in results for run in r["runs"]])
    skipped = [f"- {r['workload']} / {s['model']}: {s['reason']}" for r in results for s in r["skipped"]]
    if skipped:
        lines += ["", "Skipped:", *skipped]
    lines += ["", "## Targets", ""]
    lines += markdown(["workload", "target", "value", "rule", "met"],
                      [[r["workload"], t["name"], fmt(t["value"], 3), t["target"], fmt(t["met"])]
                       for r in results for t in r["targets"]])
    options = [[r["workload"], run["model"], name, fmt(v["step_ms"], 2), fmt(v["speedup"], 2), fmt(v["first_step_s"], 1)]
               for r in results for run in r["runs"] for name, v in run.get("options", {}).items()]
    if options:
        lines += ["", "## Training options (Lightning step; first step includes compilation)", ""]
        lines += markdown(["workload", "model", "option", "step ms", "speed-up vs fp32", "first step s"], options)
    lines += ["", "## Extra checks", ""]
    for r in results:
        if "mmvae_k_ratio" in r:
            lines.append(f"- MMVAE step time K=10 / K=1: {r['mmvae_k_ratio']}")
        if "mmvae_epoch" in r:
            e = r["mmvae_epoch"]
            lines.append(f"- MMVAE K=10, one epoch of {e['steps']} steps: median of the first {e['edge_steps']} "
                         f"steps {e['start_ms']} ms, of the last {e['edge_steps']} {e['end_ms']} ms "
                         f"(end / start {e['end_over_start']}); trained vs untrained copy, alternating: "
                         f"{e['trained_ms']} vs {e['fresh_ms']} ms ({e['trained_over_fresh']}); "
                         f"RSS growth over the epoch {e['rss_within_epoch']['growth_pct']} %")
        if "mopoe_vs_m" in r:
            s = r["mopoe_vs_m"]
            lines.append("- step time (ms, plain loop, batch 256) by number of modalities M: "
                         + "; ".join(f"M={m}: MoPoE {a}, MVAE {b}"
                                     for m, a, b in zip(s["m"], s["mopoe_step_ms"], s["mvae_step_ms"])))
    return "\n".join(lines) + "\n"


def mopoe_figure(results: list[dict], path: Path) -> Path | None:
    """Plain-loop step time of MoPoE and MVAE against M, with a line linear in M from M=2."""
    result = next((r for r in results if "mopoe_vs_m" in r), None)
    if result is None:
        return None
    from omnivae.report.figures import scalar_curve

    sweep = result["mopoe_vs_m"]
    m, mopoe = sweep["m"], sweep["mopoe_step_ms"]
    linear = [mopoe[0] * k / m[0] for k in m]
    return scalar_curve(m, {"MoPoE": mopoe, "MVAE": sweep["mvae_step_ms"], f"linear in M from M={m[0]}": linear},
                        path, xlabel="number of modalities M", ylabel="training step (ms), batch 256",
                        title=f"PolyMNIST, MLP width 512, {result['machine']['threads']} thread(s): step time vs M")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a handful of steps per workload (about a minute)")
    parser.add_argument("--only", action="append", choices=sorted(SCRIPTS), metavar="NAME",
                        help=f"run only this workload (repeatable): {', '.join(SCRIPTS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the result JSON files and table.md")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="where to write the MoPoE-vs-M curve")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; 1 is steadier on a busy shared machine)")
    parser.add_argument("--table-only", action="store_true", help="rewrite table.md and the figure from the JSON files")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    names = [] if args.table_only else (args.only or SCRIPTS)
    failed = [name for name in names if run_workload(name, args.quick, args.out, args.threads) != 0]
    results = load_results(args.out)
    text = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)
    figure = mopoe_figure(results, args.figure)
    print(f"wrote {args.out / 'table.md'}" + (f" and {figure}" if figure else "")
          + f" in {time.perf_counter() - t0:.0f} s")
    if failed:
        print(f"failed workloads: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
