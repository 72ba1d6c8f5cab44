"""Quality benchmark: what generations are worth, on data where models differ and a ceiling is
known. Every model is trained through the library's own `train_run` with its defaults (the
same defaults as `omnivae train --data`), at one fixed budget per workload, then scored on the
held-out split by classifiers trained on real training images and by parsing captions.

    python benchmarks/bench_quality.py [--quick] [--only shapes-partial ...] [--models mopoe ...]

Workloads: shapes medium and hard (captions name every attribute), shapes partial (captions
never name the position, the size only sometimes), MNIST with partial captions (digit always,
stroke thickness and slant sometimes), PolyMNIST-5 (five image modalities sharing the digit).
Figures per model: cross-modal accuracy on the attributes the inputs determine, with the
scoring classifier's accuracy on real test images beside it (the ceiling); joint coherence of
prior samples; Fréchet distance on the classifier's features; a sharpness ratio to real
images; importance-weighted NLL; and, where inputs leave attributes open, how many distinct
values 20 draws per input show. Generation uses each model's default path (`generate` with
sampler="auto"); where the model has a conditional prior the posterior path is measured too.
Writes benchmarks/results/quality.json (quality_quick.json with --quick), a markdown table
and sample grids under docs/quality/.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

from omnivae.data.tensors import TensorData  # noqa: E402
from omnivae.errors import InputError  # noqa: E402
from omnivae.metrics.coherence import (accuracy, build_scorers, caption_scorer, conditional_coherence,  # noqa: E402
                                      joint_coherence)
from omnivae.metrics.classifier import CACHE_FORMAT  # noqa: E402
from omnivae.metrics.fid import frechet_distance  # noqa: E402
from omnivae.metrics.likelihood import estimate_log_likelihoods  # noqa: E402
from omnivae.metrics.samples import laplacian_sharpness, open_attribute_diversity  # noqa: E402
from omnivae.modalities import figure_roles  # noqa: E402
from omnivae.report.figures import image_grid  # noqa: E402
from omnivae.run import train_run  # noqa: E402
from omnivae.tasks.evaluate import classifier_features  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "quality"
MULTIMODAL = ["mvae", "mmvae", "mopoe", "jmvae", "mvtcae", "mmvae_plus", "multimodal_ae",
              "dmvae", "telbo", "crmvae", "cmvae", "jnf", "nexus", "mhvae"]

# name -> data config, models, epochs; budgets chosen so the whole benchmark fits in an hour here
WORKLOADS = {
    "shapes-medium": {"data": {"source": "shapes", "options": {"n": 6000, "level": "medium"}},
                      "models": MULTIMODAL, "epochs": 25},  # 10 left MVAE/MVTCAE/JMVAE image->text at 0.57-0.89
    "shapes-partial": {"data": {"source": "shapes", "options": {"n": 8000, "level": "partial"}},
                       "models": ["mopoe", "mmvae_plus", "mvae", "mopoe+gmm", "mopoe+adversarial"], "epochs": 40},
    "shapes-hard": {"data": {"source": "shapes", "options": {"n": 8000, "level": "hard"}},
                    "models": ["mopoe"], "epochs": 12},
    "mnist-captions": {"data": {"source": "mnist", "options": {"captions": "partial", "with_label": False,
                                                               "limit": 20000}},
                       "models": ["mopoe", "mvae"], "epochs": 12},  # MoPoE image->caption digit: 0.950 at 6, 0.964 at 12
    "polymnist-5": {"data": {"source": "polymnist", "options": {"limit": 20000}},
                    "models": ["mopoe"], "epochs": 6},
}


# "model+variant": the sharpening options measured against the plain model (their prior samples
# and cross-generations get the same Fréchet distance and sharpness figures)
VARIANTS = {"gmm": {"model": {"prior": {"kind": "gmm", "components": 10}}},
            "adversarial": {"train": {"adversarial_weight": 50.0}},
            # the conditional prior's former default fit (1,500 steps of 512), against today's (as many
            # steps as training, batches of 128)
            "prior1500": {"model": {"conditional_prior": {"steps": 1500, "batch_size": 512, "lr": 0.002}}},
            # a ladder branch: a private image layer of 32 below the code (omnivae.modalities.ladder_branch);
            # model.modalities lists every modality a run keeps: this one is for the image + text workloads
            "ladder": {"model": {"modalities": {"image": {"ladder": [32]}, "text": {}}}}}


def run_config(workload: dict, label: str, epochs: int, overrides: dict) -> dict:
    model, _, variant = label.partition("+")
    extra = VARIANTS[variant] if variant else {}
    data = json.loads(json.dumps(workload["data"]))
    if data["source"] in ("mnist", "polymnist"):
        data["options"]["root"] = str(c.mnist_dir())
    return {"data": {**data, "test_fraction": 0.1},
            "model": {"model": model, **extra.get("model", {}), **overrides.get("model", {})},
            "train": {"max_epochs": epochs, "patience": None, "progress": False, "tensorboard": False,
                      "num_threads": torch.get_num_threads(),  # --threads, not the load-dependent default
                      **extra.get("train", {}), **overrides.get("train", {})}}


def image_names(model) -> list[str]:
    """The modalities whose kinds draw pictures."""
    return figure_roles(model.modalities)[0]


def caption_names(model) -> list[str]:
    """The modalities whose kinds draw one text per value: the captions (no workload here has a
    label modality, which would draw as text too)."""
    return figure_roles(model.modalities)[1]


def ceiling(scorers, test: TensorData, model, blur: bool = False) -> dict:
    """The scoring classifiers' accuracy on real test images: no generation can score higher.
    blur=True: on the same images blurred by a 3x3 box filter, which must stay close to it
    (a scorer that misreads a blurred real shape would be scoring sharpness, not the shape)."""
    out = {}
    for name in image_names(model):
        if name in scorers:
            x = model.modalities[name].features(test.data[name])
            pred = scorers[name](torch.nn.functional.avg_pool2d(x, 3, 1, 1) if blur else x)
            out[name] = {t: float((pred[t] == test.targets[t]).float().mean()) for t in pred}
            out[name]["all"] = float(torch.stack([pred[t] == test.targets[t] for t in pred]).all(0).float().mean())
    return out


def caption_ceiling(scorers, test: TensorData, model) -> dict:
    """image->caption's ceiling: the image classifier's accuracy on the attributes each real test
    caption names (image->caption scores the attributes its generated caption names, so a
    caption that says less is scored on less). {caption name: {attribute: acc, "all": acc}}."""
    images = [n for n in image_names(model) if n in scorers]
    if not images:
        return {}
    x = model.modalities[images[0]].features(test.data[images[0]])
    pred = scorers[images[0]](x)
    out = {}
    for name in caption_names(model):
        if name in scorers:
            named = scorers[name](test.data[name])  # -1: the real caption leaves it unsaid
            required = {t: named[t] >= 0 for t in pred if t in named}
            out[name] = accuracy(pred, test.targets, required)
    return out


def named_shares(score, test: TensorData, kept: dict, name: str) -> dict | None:
    """Share of captions that name each attribute: the real test captions, and those generated
    into `name` from each given modality (kept by conditional_coherence, for every test example).
    Image->caption scores only what a caption names, so read it beside these: a caption that
    names less scores on less. None when nothing was generated into `name`."""
    def share(x) -> dict:
        return {t: round(float((v >= 0).float().mean()), 3) for t, v in score(x).items()}

    generated = {key: share(x) for key, x in kept.items() if key.endswith(f"->{name}")}
    return {"real": share(test.data[name]), **generated} if generated else None


def pairwise(coherence: dict) -> dict:
    """One-to-one directions only ("a->b"), their mean, and the mean over every direction."""
    single = {k: v["all"] for k, v in coherence.items() if "+" not in k.split("->")[0]}
    every = [v["all"] for v in coherence.values() if not math.isnan(v["all"])]
    return {"pairs": single, "mean_pairs": float(np.nanmean(list(single.values()))),
            "mean_all_subsets": float(np.mean(every))}


def sample_quality(model, test: TensorData, scorers, name: str, n: int, sampler: str) -> dict:
    """Fréchet distance (classifier features) and sharpness of cross-generated and prior images."""
    feats = classifier_features(scorers.get(name))
    real = test.data[name][:n]
    real_f = model.modalities[name].features(real)
    out = {"sharpness_real": laplacian_sharpness(real_f)}
    batch = test.batch(torch.arange(min(n, len(test))))
    generated = {"prior": model.sample(len(real), targets=[name], raw=True, sampler=sampler)[name]}
    for other in model.names:
        if other != name:
            generated[f"{other}->{name}"] = model.generate(batch, given=[other], targets=[name], raw=True,
                                                           sampler=sampler)[name]
    for key, x in generated.items():
        entry = {"sharpness_ratio": laplacian_sharpness(x) / max(out["sharpness_real"], 1e-12)}
        if feats is not None:
            entry["frechet"] = frechet_distance(feats(x), feats(real_f))
        out[key] = entry
    return out


SCORERS: dict[str, dict] = {}  # workload -> scorers of its first model; the image classifiers do not depend on it
SCORER_CACHE: Path | None = None  # --scorer-cache: trained classifiers shared by the processes of --jobs


def scorers_for(model, splits, workload: str, quick: bool) -> dict:
    """Classifiers are trained once per workload (same data for every model), or read from
    SCORER_CACHE where another process trained them; caption parsers are rebuilt for each model
    (they decode with its tokenizer)."""
    if workload not in SCORERS:
        SCORERS[workload] = build_scorers(model, splits.train, epochs=2 if quick else 4, seed=0,
                                          cache_dir=SCORER_CACHE)
    cached = dict(SCORERS[workload])
    for name in caption_names(model):
        cached[name] = caption_scorer(model.modalities[name], splits.train)
    return cached


def evaluate(model, splits, workload: str, label: str, n_eval: int, quick: bool, figures: Path = FIGURES) -> dict:
    scorers = scorers_for(model, splits, workload, quick)
    test = TensorData.from_raw(model, splits.test.subset(np.arange(min(len(splits.test), n_eval))))
    samplers = ["auto"] + (["posterior"] if getattr(model, "conditional_prior", None) is not None else [])
    result = {"ceiling": ceiling(scorers, test, model), "ceiling_blurred": ceiling(scorers, test, model, blur=True),
              "ceiling_captions": caption_ceiling(scorers, test, model), "by_sampler": {}}
    many = len(model.names) > 2
    for sampler in samplers:
        options = {"mean": False, "sampler": sampler}
        entry, kept = {}, {}
        coh = conditional_coherence(model, test, scorers, n_max=n_eval, max_given=None if not many else 4,
                                    keep=None if many else kept, **options)
        entry["coherence"] = pairwise(coh) if many else {k: v for k, v in coh.items()}
        if not many:
            mean_coh = conditional_coherence(model, test, scorers, n_max=n_eval)  # decoding the posterior mean
            entry["coherence_posterior_mean"] = {k: v.get("all") for k, v in mean_coh.items()}
        for name in (n for n in caption_names(model) if n in scorers):
            named = named_shares(scorers[name], test, kept, name)
            if named is not None:
                entry[f"named_{name}"] = named
        entry["joint"] = joint_coherence(model, scorers, n=n_eval, sampler=sampler).get("all")
        for name in image_names(model)[:1]:
            entry["samples"] = sample_quality(model, test, scorers, name, n_eval, sampler)
            for given in [[g] for g in caption_names(model) if g != name]:
                entry[f"open_{given[0]}->{name}"] = open_attribute_diversity(
                    model, test, scorers, given, name, n_samples=20, n_inputs=20 if quick else 60, sampler=sampler)
        result["by_sampler"][sampler] = entry
    try:
        nll = estimate_log_likelihoods(model, test, k=4 if quick else 16, n_max=100 if quick else 300)
        result["nll"] = {k: (-v if isinstance(v, float) else v) for k, v in nll.items() if k not in ("k", "n")}
    except InputError as exc:  # e.g. private latents: no IW estimate
        result["nll"] = {"error": str(exc)}
    grid(model, test, workload, label, figures)
    return result


def grid(model, test: TensorData, workload: str, label: str, folder: Path) -> None:
    """8 inputs x 8 draws of the first image modality from the first other modality (a caption)."""
    imgs = image_names(model)
    others = [n for n in model.names if n not in imgs[:1]]
    if not imgs or not others:
        return
    batch = test.batch(torch.arange(min(8, len(test))))
    draws = model.generate(batch, given=[others[0]], targets=[imgs[0]], n=8, raw=True)[imgs[0]]  # [8,B,...]
    folder.mkdir(parents=True, exist_ok=True)
    image_grid(draws.transpose(0, 1).reshape(-1, *draws.shape[2:]), folder / f"{workload}-{label}.png", nrow=8)


def run(workload: str, model_name: str, args) -> dict:
    spec = WORKLOADS[workload]
    epochs = 1 if args.quick else spec["epochs"]
    config = run_config(spec, model_name, epochs, args.overrides)
    if args.quick:
        config["data"]["options"] = {**config["data"]["options"],
                                     **({"n": 600} if "n" in config["data"]["options"] else {"limit": 1000})}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_run(config, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    model = result.model
    row = {"workload": workload, "model": model_name, "epochs": epochs, "train_seconds": round(seconds, 1),
           "train_examples": len(result.splits.train), "config": model.config.to_dict(),
           "latent_temperature": temperature_of(model),
           "scorer_format": CACHE_FORMAT}  # 4: one classifier per modality, a head per attribute
    start = time.perf_counter()
    figures = args.out / "quality-grids" if args.quick else FIGURES  # quick runs never replace the docs' grids
    row.update(evaluate(model, result.splits, workload, model_name.replace("+", "-"), args.n_eval, args.quick, figures))
    row["eval_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary(row)), flush=True)
    return row


def temperature_of(model) -> float | None:
    """The conditional prior's noise scale that default generation uses (None: no such prior)."""
    prior = getattr(model, "conditional_prior", None)
    return prior.config.temperature if prior is not None and prior.is_fitted else None


def row_temperature(row: dict):
    """A row's generation temperature; rows measured before it was recorded drew at 1.0 (the
    default then) when the run had a conditional prior (a "posterior" sampler entry beside it)."""
    if "latent_temperature" in row:
        return row["latent_temperature"]
    return 1.0 if "posterior" in row["by_sampler"] else None


def summary(row: dict) -> dict:
    """The headline figures of one row (also the README table's source)."""
    auto = row["by_sampler"]["auto"]
    coh = auto["coherence"]
    out = {"workload": row["workload"], "model": row["model"], "train_s": row["train_seconds"]}
    if "mean_pairs" in coh:
        out["mean_cross_coherence"] = round(coh["mean_pairs"], 3)
    else:
        out.update({k: round(v["all"], 3) for k, v in coh.items()})
    out["ceiling"] = {k: round(v["all"], 3) for k, v in row["ceiling"].items()}
    out["joint"] = None if auto["joint"] is None else round(auto["joint"], 3)
    for key, value in auto.items():
        if key.startswith("open_"):
            out[key] = {t: round(v["distinct_mean"], 2) for t, v in value["open"].items()}
        if key.startswith("named_"):
            out[key] = value
    return out


def write(args, rows: list[dict], t0: float) -> Path:
    out = args.out / ("quality_quick.json" if args.quick else "quality.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "quality", "quick": args.quick, "seconds": round(time.perf_counter() - t0),
                               "machine": c.machine_info(float("nan")), "rows": rows}, indent=2, default=float))
    return out


def fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    """Markdown table of the headline figures, each beside its ceiling; "scorer" is the format of
    the scoring classifiers (omnivae.metrics.classifier.CACHE_FORMAT; 3: one network per attribute),
    so rows scored by different classifiers are not compared unawares. Rows go by workload, each
    workload's default models first in their listed order, then the others as measured."""
    def order(r: dict) -> tuple:
        w = list(WORKLOADS).index(r["workload"]) if r["workload"] in WORKLOADS else len(WORKLOADS)
        listed = WORKLOADS.get(r["workload"], {}).get("models", [])
        return (w, listed.index(r["model"]) if r["model"] in listed else len(listed))

    rows = sorted(rows, key=order)
    lines = ["| workload | model | epochs | T | caption/source -> image | image -> caption/target | mean cross (PolyMNIST) "
             "| ceiling | joint | open attribute: distinct values in 20 draws | FD prior (post. / flow) | sharpness prior (flow) | NLL "
             "| scorer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        auto, post = r["by_sampler"]["auto"], r["by_sampler"].get("posterior", {})
        coh = auto["coherence"]
        to_img = next((v["all"] for k, v in coh.items() if isinstance(v, dict) and k.endswith("->image")), None)
        from_img = next((v["all"] for k, v in coh.items() if isinstance(v, dict) and k.startswith("image->")), None)
        cross = coh.get("mean_pairs")
        ceil = "/".join(fmt(v["all"]) for v in r["ceiling"].values())
        if r.get("ceiling_captions"):  # image->caption's own ceiling (caption_ceiling)
            ceil += " (captions " + "/".join(fmt(v["all"]) for v in r["ceiling_captions"].values()) + ")"
        opened = next((v["open"] for k, v in auto.items() if k.startswith("open_")), {})
        open_txt = ", ".join(f"{t} {v['distinct_mean']:.1f}/{v['classes']}" for t, v in opened.items()) or "-"
        fd_flow = auto.get("samples", {}).get("prior", {}).get("frechet")
        fd_post = post.get("samples", {}).get("prior", {}).get("frechet")
        sharp = auto.get("samples", {}).get("prior", {}).get("sharpness_ratio")
        temp = row_temperature(r)
        lines.append(f"| {r['workload']} | {r['model']} | {r['epochs']} | {'-' if temp is None else temp} | {fmt(to_img)} | {fmt(from_img)} | {fmt(cross)} | {ceil} "
                     f"| {fmt(auto['joint'])} | {open_txt} | {fmt(fd_post)} / {fmt(fd_flow)} | {fmt(sharp)} "
                     f"| {fmt(r['nll'].get('joint'))} | {r.get('scorer_format') or '3'} |")  # noqa: E501
    return "\n".join(lines)


def recompute_ceilings(args) -> list[dict]:
    from omnivae.models import build_model
    from omnivae.run import RunConfig, resolve_model_config, split_data
    from omnivae.data.sources import load_source

    path = args.out / ("quality_quick.json" if args.quick else "quality.json")
    result = json.loads(path.read_text())
    c.setup(args.threads)
    for workload in dict.fromkeys(r["workload"] for r in result["rows"] if r["workload"] in args.only):
        config = RunConfig.from_dict(run_config(WORKLOADS[workload], "mopoe", 1, {}))
        splits = split_data(load_source(config.data), config)
        model = build_model(resolve_model_config(config.model, splits.train), splits.train)
        scorers = scorers_for(model, splits, workload, args.quick)
        n = min(len(splits.test), args.n_eval if not args.quick else 60)
        test = TensorData.from_raw(model, splits.test.subset(np.arange(n)))
        values, captions = ceiling(scorers, test, model), caption_ceiling(scorers, test, model)
        for row in result["rows"]:
            if row["workload"] == workload:
                row["ceiling"], row["ceiling_captions"] = values, captions
        print(workload, json.dumps(values))
    path.write_text(json.dumps(result, indent=2, default=float))
    return result["rows"]


def planned_rows(args) -> list[tuple[str, str]]:
    """(workload, model) of every row this call measures, in table order."""
    out = []
    for workload in args.only:
        if WORKLOADS[workload]["data"]["source"] in ("mnist", "polymnist") and c.load_mnist_or_none("test", 10) is None:
            print(f"skipping {workload}: no MNIST files in {c.mnist_dir()}")
            continue
        out += [(workload, m) for m in args.models or WORKLOADS[workload]["models"]]
    return out


def run_jobs(args, planned: list[tuple[str, str]], rows: list[dict], t0: float) -> list[dict]:
    """Every row in its own process of one thread, args.jobs at a time (two small trainings side by
    side use two cores better than one training on both), the longest budgets first; the scoring
    classifiers are trained once per workload and shared through a cache folder."""
    def cost(key: tuple[str, str]) -> int:  # epochs x examples loaded
        options = WORKLOADS[key[0]]["data"]["options"]
        return WORKLOADS[key[0]]["epochs"] * options.get("n", options.get("limit", 0))

    queue = sorted(planned, key=cost, reverse=True)
    done: dict[tuple[str, str], dict] = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        running: dict[subprocess.Popen, tuple] = {}
        while queue or running:
            while queue and len(running) < args.jobs:
                key = queue.pop(0)
                folder = Path(tmp) / f"{len(queue)}-{key[0]}-{key[1]}"
                cmd = [sys.executable, __file__, "--only", key[0], "--models", key[1], "--threads", "1",
                       "--n-eval", str(args.n_eval), "--out", str(folder), "--scorer-cache", str(Path(tmp) / "scorers"),
                       "--overrides", json.dumps(args.overrides)] + (["--quick"] if args.quick else [])
                folder.mkdir()
                log = open(folder / "log.txt", "w")
                running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)] = (key, folder, log)
            time.sleep(1)
            for proc in [p for p in running if p.poll() is not None]:
                key, folder, log = running.pop(proc)
                log.close()
                result = folder / ("quality_quick.json" if args.quick else "quality.json")
                if proc.returncode == 0 and result.is_file():
                    done[key] = json.loads(result.read_text())["rows"][0]
                    if args.quick:  # quick runs draw their grids beside their results, not in docs/
                        shutil.copytree(folder / "quality-grids", args.out / "quality-grids", dirs_exist_ok=True)
                    print(json.dumps(summary(done[key])), flush=True)
                    write(args, rows + [done[k] for k in planned if k in done], t0)
                else:
                    failed.append(key)
                    print(f"{key} failed (exit {proc.returncode}):\n{(folder / 'log.txt').read_text()[-3000:]}", flush=True)
    if failed:
        raise SystemExit(f"rows that failed: {failed} (the others are in the results)")
    return rows + [done[k] for k in planned]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the script runs")
    parser.add_argument("--only", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--models", nargs="*", default=None, help="override each workload's model list")
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1,
                        help="rows measured at once, each in its own process of one thread (--threads is ignored)")
    parser.add_argument("--scorer-cache", type=Path, default=None, help=argparse.SUPPRESS)  # set by --jobs
    parser.add_argument("--out", type=Path, default=c.RESULTS)
    parser.add_argument("--overrides", type=json.loads, default={},
                        help='JSON merged into every run config, e.g. \'{"model": {"latent_dim": 32}}\'')
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of the last results that this run does not measure again")
    parser.add_argument("--table", action="store_true", help="print the table of the last results and stop")
    parser.add_argument("--recompute-ceilings", action="store_true",
                        help="retrain the scoring classifiers of each workload in the last results and rewrite "
                             "their ceiling column (no model is trained)")
    args = parser.parse_args(argv)
    if args.recompute_ceilings:
        return recompute_ceilings(args)
    if args.table:
        rows = json.loads((args.out / ("quality_quick.json" if args.quick else "quality.json")).read_text())["rows"]
        print(table(rows))
        return rows
    if args.quick:
        args.n_eval = 60
    global SCORER_CACHE
    SCORER_CACHE = args.scorer_cache
    rows, t0 = [], time.perf_counter()
    last = args.out / ("quality_quick.json" if args.quick else "quality.json")
    planned = planned_rows(args)
    if args.append and last.is_file():
        measured = set(planned)
        rows = [r for r in json.loads(last.read_text())["rows"] if (r["workload"], r["model"]) not in measured]
    if args.jobs > 1:
        rows = run_jobs(args, planned, rows, t0)
    else:
        c.setup(args.threads)
        for workload, model_name in planned:
            rows.append(run(workload, model_name, args))
            write(args, rows, t0)  # after every row: a crash or a kill keeps what was measured
    out = write(args, rows, t0)
    print(table(rows))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
