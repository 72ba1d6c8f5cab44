"""deep-models: a hierarchical VAE against a flat one, and fitted sampling priors against N(0, I),
on real MNIST (a Bernoulli likelihood on the grey levels / 255, not binarised images: the NLLs
are not comparable with binarised-MNIST papers).

(a) Flat `vae` (MLP 784-512-256, latent 32) against `ladder_vae` (the same image encoder and decoder
    networks for its bottom layer of 32, a top layer of 16, bottom-up and top-down MLPs of width
    128 between them: about 2% more parameters; each run records its parameter count) with its
    default residual posterior and with the paper's precision-weighted merge (`ladder_vae_merge`),
    and a flat `vae` with code 16 and the image's ladder branch of 32 below it (`vae_ladder_branch`,
    omnivae.modalities.ladder_branch: its importance weights score the branch's bound, so compare
    it by the one-draw negative ELBO, an exact bound for every model),
    trained with the same budget (epochs, batch, Adam, KL warm-up), scored on the MNIST test set by
    the importance-weighted NLL (omnivae.metrics.likelihood.estimate_log_likelihoods, k importance
    samples from each model's own proposal: the ladder's is the hierarchical q(z_1, z_2 | x)), the
    one-draw negative ELBO, the test-set KL of each layer (one draw, nats) and the active units per
    layer (Burda et al. 2016: dimensions whose posterior mean varies over the test set, Cov_x > 0.01).
(b) On the trained flat VAE: Fréchet distance between decoded prior samples and real test images
    on the features of a digit classifier trained on the training images (as bench_quality and
    `omnivae evaluate` compute it: metrics.coherence.build_scorers + tasks.evaluate.classifier_features
    + metrics.fid.frechet_distance) for codes from N(0, I), a 10-component full-covariance Gaussian
    mixture and the normalising-flow prior (both fitted on the training set with fit_prior), over
    several sampling seeds; with references: real training images, and reconstructions of the test
    images (decoded posterior means) against the same test images.

    python benchmarks/bench_deep_models.py [--quick] [--threads N] [--out DIR]

Writes benchmarks/results/deep-models.json (deep-models_quick.json with --quick).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c  # noqa: E402

from omnivae.batch import Batch  # noqa: E402
from omnivae.data.tensors import TensorData  # noqa: E402
from omnivae.metrics.coherence import build_scorers  # noqa: E402
from omnivae.metrics.fid import frechet_distance  # noqa: E402
from omnivae.metrics.likelihood import estimate_log_likelihoods  # noqa: E402
from omnivae.models import build_model  # noqa: E402
from omnivae.priors import encode_latents, fit_prior  # noqa: E402
from omnivae.tasks.evaluate import classifier_features  # noqa: E402
from omnivae.train.config import TrainConfig  # noqa: E402
from omnivae.train.trainer import fit  # noqa: E402

NAME = "deep-models"
IMAGE = {"kind": "image", "shape": [1, 28, 28], "arch": "mlp", "hidden": [512, 256], "likelihood": "bernoulli"}
LADDER = {"model": "ladder_vae", "layers": [32, 16], "hidden": [128], "modalities": {"image": IMAGE}}
MODELS = {"vae": {"model": "vae", "latent_dim": 32, "modalities": {"image": IMAGE}},
          "ladder_vae": {**LADDER, "posterior": "residual"},
          "ladder_vae_merge": {**LADDER, "posterior": "merge"},
          # the same two layers as an image branch: a flat VAE with code 16 and a private layer of 32 below
          "vae_ladder_branch": {"model": "vae", "latent_dim": 16, "modalities": {"image": {**IMAGE, "ladder": [32]}}}}
FULL = {"train": 10000, "test": 2000, "epochs": 12, "k": 256, "samples": 2000, "seeds": 3, "classifier_epochs": 3,
        "flow_steps": 800}
QUICK = {"train": 600, "test": 100, "epochs": 1, "k": 4, "samples": 100, "seeds": 1, "classifier_epochs": 1,
         "flow_steps": 20}
TRAIN = {"batch_size": 128, "lr": 1e-3, "kl_warmup_epochs": 2.0, "patience": None, "grad_clip": 10.0,
         "progress": False, "tensorboard": False, "seed": 0}


def train_model(label: str, train_raw, plan: dict) -> tuple:
    torch.manual_seed(0)
    model = build_model(MODELS[label], train_raw)
    data = TensorData.from_raw(model, train_raw)
    config = TrainConfig(**TRAIN, max_epochs=plan["epochs"], num_threads=torch.get_num_threads())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omnivae-deep-") as run_dir:
        fit(model, data, None, config, run_dir)
    return model.eval(), round(time.perf_counter() - t0, 1)


@torch.no_grad()
def active_units(model, test: TensorData) -> list[int]:
    """Per stochastic layer (bottom first): dimensions whose posterior mean has variance > 0.01 over
    the test set (the ladder's lower-layer means come from the top-down pass with means for draws)."""
    x = test.data["image"]
    if model.config.model == "ladder_vae":
        up = model.bottom_up(model.modalities["image"].features(x))
        means = [z for z, _, _ in reversed(model.top_down(up, mean=True))]
    else:
        means = [model.encode({"image": x})]
    return [int((m.var(0) > 0.01).sum()) for m in means]


@torch.no_grad()
def layer_kls(model, test: TensorData, n: int) -> dict[str, float]:
    """Mean KL terms over the first n test images (one draw): "kl", and per layer "kl_z<i>" for the ladder."""
    torch.manual_seed(0)
    terms = model.loss(Batch({"image": test.data["image"][:n]}, {})).terms
    return {k: round(float(v), 2) for k, v in terms.items() if k.startswith("kl")}


def likelihood_run(label: str, train_raw, test_raw, plan: dict) -> tuple:
    model, seconds = train_model(label, train_raw, plan)
    test = TensorData.from_raw(model, test_raw)
    t0 = time.perf_counter()
    nll = estimate_log_likelihoods(model, test, k=plan["k"], n_max=plan["test"], seed=0)
    elbo = estimate_log_likelihoods(model, test, k=1, n_max=plan["test"], seed=0)
    run = {"model": label, "config": model.config.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
           "train_seconds": seconds, "iw_nll": round(-nll["joint"], 2), "neg_elbo": round(-elbo["joint"], 2),
           "k": plan["k"], "n_test": nll["n"], "kl": layer_kls(model, test, plan["test"]),
           "active_units": active_units(model, test),
           "eval_seconds": round(time.perf_counter() - t0, 1)}
    print(f"  {label}: {run['parameters']} parameters, IW NLL (k={plan['k']}) {run['iw_nll']} nats, "
          f"-ELBO {run['neg_elbo']}, KL {run['kl']}, active units {run['active_units']}, trained in {seconds} s",
          flush=True)
    return model, run


def prior_frechet(model, train_raw, test: TensorData, plan: dict) -> dict:
    """Fréchet distances of decoded prior samples to the test images under each prior (see module doc)."""
    scorers = build_scorers(model, train_raw, epochs=plan["classifier_epochs"], seed=0)
    feats = classifier_features(scorers.get("image"))
    mod, n = model.modalities["image"], plan["samples"]
    real = feats(mod.features(test.data["image"][:n]))
    train_images = TensorData.from_raw(model, train_raw).data["image"][:n]
    out = {"n": n, "seeds": plan["seeds"], "reference": {
        "real_train_images": frechet_distance(feats(mod.features(train_images)), real),
        "test_reconstructions": frechet_distance(feats(model.reconstruct({"image": test.data["image"][:n]},
                                                                        raw=True)["image"]), real)}}
    fitted = {"normal": lambda: None,
              "gmm": lambda: fit_prior(model, train_raw, kind="gmm", components=10, covariance="full", seed=0),
              "flow": lambda: fit_prior(model, train_raw, kind="flow", steps=plan["flow_steps"], seed=0)}
    for name, fit_one in fitted.items():
        t0 = time.perf_counter()
        fit_one()
        fit_seconds = round(time.perf_counter() - t0, 1)
        values = []
        for seed in range(plan["seeds"]):
            torch.manual_seed(seed)
            values.append(frechet_distance(feats(model.sample(n, raw=True)["image"]), real))
        out[name] = {"frechet": [round(v, 3) for v in values], "mean": round(statistics.mean(values), 3),
                     "fit_seconds": fit_seconds}
        print(f"  prior {name}: Fréchet distance {out[name]['mean']} (seeds {out[name]['frechet']}), "
              f"fitted in {fit_seconds} s", flush=True)
    out["prior_configs"] = {"gmm": {"kind": "gmm", "components": 10, "covariance": "full"},
                            "flow": model.config.prior.to_dict()}
    codes = encode_latents(model, test)
    out["test_code_std"] = {"min": round(float(codes.std(0).min()), 3), "max": round(float(codes.std(0).max()), 3)}
    return out


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    plan = QUICK if quick else FULL
    result = c.new_result(NAME, quick, **plan, train_options=TRAIN)
    train_raw = c.load_mnist_or_none("train", limit=plan["train"], with_label=False)
    if train_raw is None:
        result["skipped"].append({"model": "all", "reason": f"skipped: MNIST files not found in {c.mnist_dir()}"})
    else:
        test_raw = c.load_mnist_or_none("test", limit=plan["test"], with_label=False)
        models = {}
        for label in MODELS:
            model, run = likelihood_run(label, train_raw, test_raw, plan)
            models[label] = model
            result["runs"].append(run)
        runs = {run["model"]: run for run in result["runs"]}
        flat, ladder, merged, branch = (runs[k] for k in MODELS)
        result["parameters"] = {run["model"]: run["parameters"] for run in result["runs"]}
        result["nll_ladder_minus_vae"] = round(ladder["iw_nll"] - flat["iw_nll"], 2)
        result["nll_ladder_merge_minus_vae"] = round(merged["iw_nll"] - flat["iw_nll"], 2)
        result["neg_elbo_branch_minus_vae"] = round(branch["neg_elbo"] - flat["neg_elbo"], 2)
        test = TensorData.from_raw(models["vae"], test_raw)
        result["frechet"] = prior_frechet(models["vae"], train_raw, test, plan)
        fd = result["frechet"]
        result["targets"] += [
            c.target("ladder_vae IW NLL - vae IW NLL (nats, same budget)", result["nll_ladder_minus_vae"], 0.0,
                     note=f"parameters {ladder['parameters']} vs {flat['parameters']}; "
                          f"top-layer KL {ladder['kl'].get('kl_z2')} nats"),
            c.target("Fréchet distance, gmm prior / N(0, I)", round(fd["gmm"]["mean"] / fd["normal"]["mean"], 3), 1.0),
            c.target("Fréchet distance, flow prior / N(0, I)", round(fd["flow"]["mean"] / fd["normal"]["mean"], 3), 1.0)]
    return c.save_result(result, t0, out)


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
