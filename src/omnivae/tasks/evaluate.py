"""Evaluate a trained model on held-out data: coherence metrics, figures, metrics.json,
report.html. Used by `omnivae demo` and `omnivae evaluate`."""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from omnivae.atomic import write_bytes as atomic_write_bytes
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.metrics.coherence import (
    build_scorers,
    conditional_coherence,
    joint_coherence,
    real_scores,
)
from omnivae.metrics.reconstruction import reconstruction_metrics
from omnivae.modalities import MODALITY_KINDS, figure_roles
from omnivae.run_folder import RunFolder
from omnivae.threads import default_threads


def combined_metrics_csv(run_dir: Path, out: Path) -> Path | None:
    """All CSV metric files of a (possibly resumed) run as one file."""
    files = RunFolder(run_dir).metrics_files()
    if not files:
        return None
    rows, keys = [], []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            keys += [k for k in reader.fieldnames or [] if k not in keys]
            rows += list(reader)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return out


def evaluate_model(model, train: RawData, test: RawData, out_dir: Path, run_dir: Path | None = None,
                   n_eval: int = 1000, scorer_epochs: int = 3, seed: int = 0, scorer_examples: int = 2500,
                   num_threads: int | str | None = "auto", progress=None) -> dict:
    """Every metric that applies to `model` and `test`, with figures; writes metrics.json and
    report.html. Metrics that do not apply to the data are listed under "skipped" with why.

    n_eval caps the test examples each metric uses; the evaluation classifiers are trained
    for `scorer_epochs` on at most `scorer_examples` training examples. The work runs on
    `num_threads` torch/BLAS threads (None: as set; "auto": omnivae.threads.default_threads, every
    core on a quiet machine and one beside busy programs: on the demo run 9.3 s with two threads
    against 10.5-11.1 s with one when quiet, but 24-27 s against 11.2 s beside one busy program).

    progress(step, total): called as each of the `EVALUATION_STEPS` starts (a progress bar)."""
    with limited_threads(num_threads):
        return _evaluate(model, train, test, Path(out_dir), run_dir, n_eval, scorer_epochs, seed, scorer_examples,
                         progress or (lambda step, total: None))


EVALUATION_STEPS = ("Evaluation classifiers", "Coherence", "Latent probes", "Retrieval", "Anomaly detection",
                    "Likelihood", "Fréchet distance", "Figures and report")  # Extra.run's titles in the middle


def _evaluate(model, train, test, out_dir, run_dir, n_eval, scorer_epochs, seed, scorer_examples, progress) -> dict:
    from omnivae.report import figures
    from omnivae.report.html import Section, write_report
    from omnivae.report.sections import curve_sections, run_sections

    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    test_data = TensorData.from_raw(model, test)
    total = len(EVALUATION_STEPS)
    progress(EVALUATION_STEPS[0], total)
    cache = RunFolder(run_dir).scorers if run_dir is not None else None  # a second evaluation reuses them
    scorers = build_scorers(model, train, epochs=scorer_epochs, seed=seed, max_examples=scorer_examples,
                            cache_dir=cache)
    progress(EVALUATION_STEPS[1], total)
    readable = real_scores(test_data, scorers, n_eval)  # what the real test data shows, read once
    drawn = model.uses_conditional_prior("auto")  # generation draws codes (else: the posterior mean)
    generated: dict = {}  # outputs drawn as the Frechet distance draws them, reused there
    metrics = {
        "model": model.config.model,
        "n_test": len(test),
        # the default generation path: draws from the conditional prior where the model has one
        "coherence": conditional_coherence(model, test_data, scorers, n_max=n_eval, mean=not drawn,
                                           readable=readable, keep=generated if drawn else None),
        "joint_coherence": joint_coherence(model, scorers, n=n_eval, keep=generated),
        "reconstruction": reconstruction_metrics(model, test_data, n_max=n_eval),
    }
    if drawn:
        metrics["coherence_posterior_mean"] = conditional_coherence(model, test_data, scorers, n_max=n_eval,
                                                                    readable=readable)
    csv_path = combined_metrics_csv(Path(run_dir), fig_dir / "metrics_all.csv") if run_dir is not None else None
    sections = run_sections(model.config.to_dict(), train, test, run_dir, csv_path)  # config, data, training time
    sections += [Section("Metrics", "Cross-modal accuracy: a generated modality is scored by a classifier "
                        "(images) or a caption parser (text) and compared with the true attributes.",
                        table=dict(metrics))]
    extra = Extra(model, train, test, test_data, scorers, fig_dir, figures, Section, n_eval, seed, generated)
    metrics.update(extra.run(lambda step: progress(step, total)))
    progress(EVALUATION_STEPS[-1], total)
    sections += extra.sections
    sections += figure_sections(model, test, test_data, fig_dir, figures, Section)
    if csv_path is not None:
        sections += curve_sections(csv_path, fig_dir)  # training curves and the overfitting check
    metrics = json_safe(metrics)
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
    write_report(out_dir / "report.html", f"omnivae {model.config.model} report", sections)
    return metrics


@contextmanager
def limited_threads(n: int | str | None):
    """Torch and BLAS/OpenMP thread pools limited to n threads inside the block (None: unchanged;
    "auto": default_threads, the cores other programs leave free)."""
    if n is None:
        yield
        return
    if n == "auto":
        n = default_threads(os.cpu_count() or 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be >= 1, 'auto' or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


class Skip(Exception):
    """A metric does not apply to this model or data (the reason is reported, not raised)."""


def json_safe(value):
    """Plain JSON values: numpy scalars become floats/ints, NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


class Extra:
    """Latent probes, retrieval, anomaly detection, likelihood and Fréchet distance, each
    run on its own: a metric that does not apply is skipped with a reason."""

    PROBE_TRAIN = 1500  # training examples embedded for the linear probes
    LIKELIHOOD_K, LIKELIHOOD_N = 10, 200
    ANOMALY_FRACTION = 0.25
    FRECHET_N = 400

    def __init__(self, model, train, test, test_data, scorers, fig_dir, figures, Section, n_eval, seed,
                 generated: dict | None = None):
        self.model, self.train, self.test, self.data = model, train, test, test_data
        # outputs the coherence metrics generated as the Frechet distance would ("text->image", "prior->image")
        self.generated = generated or {}
        self.scorers, self.fig_dir, self.figures, self.Section = scorers, fig_dir, figures, Section
        self.n_eval, self.seed = n_eval, seed
        self.n = min(len(test), n_eval)
        self.names = [m for m in model.names if m in test_data.data]
        self.kinds = {m: model.modalities[m].kind for m in self.names}
        # how figures show each modality: as its kind draws it (pictures, or one short text each)
        self.picture_names, self.text_names = figure_roles({m: model.modalities[m] for m in self.names})
        self.drawn_names = [m for m in self.names if m in self.picture_names or m in self.text_names]
        self.sections: list = []
        self.skipped: dict[str, str] = {}
        self._figures: list = []  # figure sections of the metric being computed

    def run(self, progress=lambda step: None) -> dict:
        from omnivae.report.sections import FRECHET_TEXT

        out = {}
        steps = [
            ("latent_probes", "Latent probes", self.probes,
             "Linear-probe accuracy (logistic regression trained on training-set latent means, scored on "
             "test) and k-means clustering accuracy / NMI, per target, for the joint posterior and each "
             "modality alone."),
            ("retrieval", "Retrieval", self.retrieval,
             "Cross-modal retrieval on latent means (cosine): Recall@K and median rank of the first "
             "gallery item whose targets all equal the query's."),
            ("anomaly", "Anomaly detection", self.anomaly,
             "AUROC and average precision of each anomaly score on test data with planted anomalies: "
             f"mismatched pairs (one modality swapped for another example's, {self.ANOMALY_FRACTION:.0%} of "
             f"examples) and corrupted values{self.corruptions()}."),
            ("log_likelihood", "Likelihood", self.likelihood,
             f"Importance-weighted estimates (K={self.LIKELIHOOD_K}, proposal: the model's joint posterior) "
             f"of log p in nats per example, on up to {self.LIKELIHOOD_N} test examples: joint, each "
             "modality alone, and conditionals a->b = log p(b | a)."),
            ("frechet_distance", "Fréchet distance", self.frechet, FRECHET_TEXT),
        ]
        for key, title, fn, text in steps:
            progress(title)
            self._figures = []
            try:
                value = fn()
            except Skip as exc:
                self.skipped[key] = str(exc)
                self.sections.append(self.Section(title, f"Skipped: {exc}"))
                continue
            except Exception as exc:  # one failing metric must not cost the whole report
                warnings.warn(f"evaluation metric {key!r} failed: {type(exc).__name__}: {exc}", stacklevel=2)
                self.skipped[key] = f"failed: {type(exc).__name__}: {exc}"
                self.sections.append(self.Section(title, f"Failed: {type(exc).__name__}: {exc}"))
                continue
            out[key] = value
            self.sections.append(self.Section(title, text, table=value))
            self.sections.extend(self._figures)
            self._figures = []
        out["skipped"] = self.skipped
        return out

    def add_figure(self, title: str, text: str, path) -> None:
        self._figures.append(self.Section(title, text, images=[path]))

    def varied(self, raw: RawData) -> list[str]:
        return [t for t, v in raw.targets.items() if len(np.unique(v)) > 1]

    # -- latent probes ---------------------------------------------------------------------
    def probes(self) -> dict:
        from omnivae.metrics.probe import kmeans_scores, linear_probe

        targets = [t for t in self.varied(self.test) if t in self.train.targets
                   and len(np.unique(self.train.targets[t][:self.PROBE_TRAIN])) > 1]
        if not targets:
            raise Skip("the data has no target labels that vary")
        train = self.train.subset(np.arange(min(len(self.train), self.PROBE_TRAIN)))
        train_data = TensorData.from_raw(self.model, train)
        views = {"joint": None, **({m: [m] for m in self.names} if len(self.names) > 1 else {})}
        codes_train = view_codes(self.model, train_data, views)
        codes_test = view_codes(self.model, head(self.data, self.n), views)
        out: dict = {}
        for view, given in views.items():
            z_train, z_test = codes_train[view], codes_test[view]
            keep_tr = self.present_rows(train_data, given)
            keep_te = self.present_rows(self.data, given)[: self.n]
            for t in targets:
                y_tr, y_te = train.targets[t][keep_tr], self.test.targets[t][: self.n][keep_te]
                if len(np.unique(y_tr)) < 2 or len(y_te) < 2:
                    continue
                scores = kmeans_scores(z_test[keep_te], y_te, seed=self.seed)
                out.setdefault(view, {})[t] = {
                    "linear_probe": linear_probe(z_train[keep_tr], y_tr, z_test[keep_te], y_te),
                    "kmeans_accuracy": scores["accuracy"], "kmeans_nmi": scores["nmi"]}
        if not out:
            raise Skip("too few labelled examples to fit a probe")
        return out

    @staticmethod
    def present_rows(data: TensorData, given) -> np.ndarray:
        """Bool [N]: at least one of `given` (None: any modality) is present."""
        names = list(data.data) if given is None else given
        present = torch.zeros(len(data), dtype=torch.bool)
        for m in names:
            present |= data.mask.get(m, torch.ones(len(data), dtype=torch.bool))
        return present.numpy()

    # -- retrieval ---------------------------------------------------------------------------
    def retrieval(self) -> dict:
        from omnivae.tasks.retrieve import all_pairs_retrieval

        if len(self.names) < 2:
            raise Skip("retrieval needs at least two modalities")
        out = all_pairs_retrieval(self.model, self.data, n_max=self.n)
        try:
            self.retrieval_figures()
        except Skip:
            pass
        return out

    def corruptions(self) -> str:
        """How the kinds of this model's modalities corrupt values, for the anomaly section's text."""
        found = {m: MODALITY_KINDS[k].corruption_text() for m, k in self.kinds.items()}
        found = {m: text for m, text in found.items() if text}
        return " (" + "; ".join(f"{m}: {text}" for m, text in found.items()) + ")" if found else ""

    def _items(self, name: str, x: torch.Tensor):
        """Model-space values -> what a figure can draw (images, or strings), else Skip."""
        out = self.model.modalities[name].drawn(x)
        if out is None:
            raise Skip(f"modality {name!r} ({self.kinds[name]}) cannot be drawn")
        return out

    def retrieval_figures(self) -> None:
        from omnivae.tasks.retrieve import RetrievalIndex

        drawable, pictures = self.drawn_names, self.picture_names
        others = [m for m in drawable if m not in pictures[:1]]
        pairs = [(o, pictures[0]) for o in others[:1]] if pictures else list(zip(drawable[:1], drawable[1:2]))
        if not pairs:
            raise Skip("no modalities that can be drawn")
        for query, gallery in pairs:  # one figure: text (or another modality) to image
            present = self.data.mask.get(query, torch.ones(len(self.data), dtype=torch.bool))[: self.n]
            rows = distinct_rows(self.test, query, present.numpy(), 4)
            index = RetrievalIndex(self.model, head(self.data, self.n), gallery)
            qbatch = self.data.batch(torch.as_tensor(rows))
            result = index.query(qbatch, given=[query], k=5)
            gal = self.data.data[gallery][torch.from_numpy(result.indices.reshape(-1))]
            items = self._items(gallery, gal)
            if isinstance(items, torch.Tensor):
                items = items.reshape(len(rows), 5, *items.shape[1:])
            else:
                items = [items[i * 5:(i + 1) * 5] for i in range(len(rows))]
            path = self.figures.retrieval_examples(self._items(query, qbatch.data[query]), items, result.scores,
                                                   self.fig_dir / f"retrieval_{query}_to_{gallery}.png")
            self.add_figure("Retrieval examples", f"Top 5 test {gallery} items for test {query} queries, by cosine similarity of latent means.",
                            path)

    # -- anomaly detection -------------------------------------------------------------------
    def anomaly(self) -> dict:
        from omnivae.metrics.anomaly import auroc, average_precision
        from omnivae.tasks.detect import (
            AnomalyDetector,
            corrupted,
            mismatched_pairs,
        )

        test = self.test.subset(np.arange(self.n))
        detector = AnomalyDetector(self.model, seed=self.seed)
        benchmarks = {}
        if len(self.names) > 1:
            for m in (self.names if len(self.names) > 2 else self.names[-1:]):
                benchmarks[f"mismatched_{m}"] = mismatched_pairs(test, m, self.ANOMALY_FRACTION, self.seed)
        for m in self.names:  # values corrupted as their kind corrupts them (pictures: noise, occlusion)
            found = corrupted(test, m, self.ANOMALY_FRACTION, self.seed) if test.mask[m].any() else None
            if found is not None:
                benchmarks[f"corrupted_{m}"] = found
        if not benchmarks:
            raise Skip("needs two modalities (mismatched pairs) or a modality whose kind can corrupt its values")
        out, shown = {}, False
        clean = detector.score(test)  # a benchmark changes only its anomalies: the other rows score as clean
        for key, (raw, is_anomaly) in benchmarks.items():
            scores = with_rows(clean, is_anomaly, detector.score(raw.subset(np.nonzero(is_anomaly)[0])))
            table = {}
            for name, s in scores.items():
                ok = np.isfinite(s)
                if ok.sum() < 2 or is_anomaly[ok].all() or not is_anomaly[ok].any():
                    continue
                table[name] = {"auroc": auroc(s[ok], is_anomaly[ok]), "ap": average_precision(s[ok], is_anomaly[ok])}
            if not table:
                continue
            out[key] = table
            if not shown:
                shown = self.anomaly_figure(key, raw, scores, table)
        if not out:
            raise Skip("no anomaly score applies to this data")
        return out

    def anomaly_figure(self, key: str, raw: RawData, scores: dict, table: dict) -> bool:
        best = max(table, key=lambda s: table[s]["auroc"])
        pictures, texts = self.picture_names, self.text_names
        if not pictures and not texts:
            return False
        s = np.nan_to_num(scores[best], nan=-np.inf)
        order = np.argsort(-s, kind="stable")[:8]
        shown = TensorData.from_raw(self.model, raw.subset(order))
        img = self.model.modalities[pictures[0]].drawn(shown.data[pictures[0]]) if pictures else None
        txt = [t if ok else "" for t, ok in zip(self.model.modalities[texts[0]].drawn(shown.data[texts[0]]),
                                                 shown.mask[texts[0]])] if texts else None
        path = self.figures.anomaly_examples(img, txt, s[order], self.fig_dir / "anomalies.png", k=8)
        self.add_figure("Highest anomaly scores",
                        f"The 8 test examples with the highest {best} score among the {key.replace('_', ' ')} "
                        f"benchmark (AUROC {table[best]['auroc']:.3f}), most anomalous first.", path)
        return True

    # -- likelihood ---------------------------------------------------------------------------
    def likelihood(self) -> dict:
        from omnivae.metrics.likelihood import estimate_log_likelihoods

        if self.model.deterministic_codes:
            raise Skip("deterministic autoencoders have no likelihood")
        if not (self.model.decodes_shared_codes or hasattr(self.model, "log_importance_weights")):
            raise Skip("no importance-weighted likelihood for models whose decoders read more than the shared "
                       "latent (private latents, conditions or a hierarchy)")
        return estimate_log_likelihoods(self.model, self.data, k=self.LIKELIHOOD_K,
                                        n_max=min(self.n, self.LIKELIHOOD_N), seed=self.seed,
                                        conditionals=len(self.names) > 1)

    # -- Fréchet distance ----------------------------------------------------------------------
    def frechet(self) -> dict:
        from omnivae.metrics.fid import frechet_distance

        if not self.picture_names:
            raise Skip("no image modality (no modality whose kind draws pictures)")
        out = {}
        n = min(self.n, self.FRECHET_N)
        for img in self.picture_names:
            feature_fn = classifier_features(self.scorers.get(img))
            if feature_fn is None:
                raise Skip(f"no evaluation classifier for {img!r} (the data has no varying targets)")
            present = self.data.mask.get(img, torch.ones(len(self.data), dtype=torch.bool))[:n]
            real = feature_fn(self.model.modalities[img].features(self.data.data[img][:n][present]))
            batch = self.data.batch(torch.arange(n))
            generated = {"prior_samples": self.drawn(img, None, batch)}
            for other in self.names:
                if other != img:
                    gen = self.drawn(img, other, batch)
                    generated[f"{other}->{img}"] = gen[present & batch.present(other)]
            out[img] = {key: frechet_distance(feature_fn(x), real) for key, x in generated.items()}
        return out

    def drawn(self, img: str, given: str | None, batch) -> torch.Tensor:
        """`img` generated for the examples of `batch` from `given` (None: prior samples, as many):
        the first of those the coherence metrics drew on the same generation path (so from the same
        distribution) when they kept enough, else generated here."""
        n = len(batch)
        kept = self.generated.get(f"{given or 'prior'}->{img}")
        if kept is not None and len(kept) >= n:
            return kept[:n]
        if given is None:
            return self.model.sample(n, targets=[img], raw=True)[img]
        return self.model.generate(batch, given=[given], targets=[img], raw=True)[img]


def classifier_features(scorer):
    """The features (the shared trunk's output, before the attribute heads) of the classifier
    inside a coherence scorer; None when the scorer holds no classifier."""
    clf = getattr(scorer, "classifier", None)
    if clf is None:
        return None

    from omnivae.metrics.classifier import features

    return lambda x: features(clf, x.float())


@torch.no_grad()
def view_codes(model, data: TensorData, views: dict, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Latent means [N, D] of `data` for each view {name: the modalities given (None: all)}, as
    `embed` gives them, a batch at a time (the model's `encode_views`: one encoding pass per
    batch where its encoders read one modality each)."""
    parts: dict[str, list] = {v: [] for v in views}
    for start in range(0, len(data), batch_size):
        batch = data.batch(torch.arange(start, min(len(data), start + batch_size)))
        for view, mu in model.encode_views(batch, views).items():
            parts[view].append(mu)
    return {v: torch.cat(p).cpu().numpy() for v, p in parts.items()}


def with_rows(scores: dict[str, np.ndarray], rows: np.ndarray, values: dict[str, np.ndarray]) -> dict:
    """Copies of per-example `scores` with the `rows` (bool [N]) replaced by `values` (of those rows)."""
    out = {}
    for name, s in scores.items():
        s = s.copy()
        s[rows] = values[name]
        out[name] = s
    return out


def head(data: TensorData, n: int) -> TensorData:
    """The first n examples of a TensorData."""
    return TensorData({k: v[:n] for k, v in data.data.items()}, {k: m[:n] for k, m in data.mask.items()},
                      {k: t[:n] for k, t in data.targets.items()})


def distinct_rows(raw: RawData, name: str, present: np.ndarray, k: int) -> list[int]:
    """Up to k example indices with distinct target combinations (or the first k)."""
    rows, seen = [], set()
    for i in np.nonzero(present)[0]:
        key = tuple(int(v[i]) for v in raw.targets.values())
        if key not in seen:
            seen.add(key)
            rows.append(int(i))
        if len(rows) == k:
            break
    return rows


def figure_sections(model, test: RawData, data: TensorData, fig_dir: Path, figures, Section) -> list:
    """Generation figures drawn as the kinds draw their values: the first modality drawn as
    pictures (`img`) and the first drawn as texts (`txt`: captions, class names): txt -> img,
    img -> txt, joint samples and reconstructions."""
    sections = []
    names = [n for n in model.names if n in data.data]
    pictures, texts = figure_roles({n: model.modalities[n] for n in names})
    k = min(16, len(test))
    batch = data.batch(torch.arange(k))

    def drawn(name: str, x: torch.Tensor):
        return model.modalities[name].drawn(x)

    if pictures and texts:
        img, txt = pictures[0], texts[0]
        rows = distinct_drawn_rows(model, data, txt, 8)
        prompts = drawn(txt, data.data[txt][rows])
        gen = model.generate(data.batch(rows), given=[txt], targets=[img], n=6, raw=True)[img]  # [6, P, ...]
        pics = drawn(img, gen.flatten(0, 1))
        pics = pics.reshape(6, len(rows), *pics.shape[1:]).transpose(0, 1)
        path = figures.text_to_image_grid(prompts, pics, fig_dir / f"{txt}_to_{img}.png")
        sections.append(Section(f"{txt} to {img}".capitalize(), f"Six samples of {img} for each {txt} value.", images=[path]))
        gen = model.generate(batch, given=[img], targets=[txt], mean=True, raw=True)[txt]
        true = [t if ok else "(missing)" for t, ok in zip(drawn(txt, batch.data[txt]), batch.mask[txt].tolist())]
        path = figures.captioned_images(drawn(img, batch.data[img]), drawn(txt, gen), fig_dir / f"{img}_to_{txt}.png",
                                        true_captions=true)
        sections.append(Section(f"{img} to {txt}".capitalize(), f"Generated {txt} (black) and the true one (grey).", images=[path]))
    joint = model.sample(16, targets=names, raw=True)
    if pictures:
        img = pictures[0]
        caps = drawn(texts[0], joint[texts[0]]) if texts else [""] * 16
        path = figures.captioned_images(drawn(img, joint[img]), caps, fig_dir / "joint_samples.png")
        sections.append(Section("Joint samples", "All modalities decoded from the same prior draws.", images=[path]))
        rec = model.reconstruct(batch, raw=True)[img]
        pair = torch.stack([drawn(img, batch.data[img]), drawn(img, rec)])
        path = figures.image_grid(pair, fig_dir / "reconstructions.png", row_labels=["input", "reconstruction"])
        sections.append(Section("Reconstructions", images=[path]))
    from omnivae.report.sections import latent_section

    z = model.encode(data.batch(torch.arange(min(3000, len(test))))).numpy()
    classes = test.info.get("classes", {})
    sections.append(latent_section(z, test.targets, classes, fig_dir / "latent_map.png"))
    from omnivae.report.latent_paths import latent_paths_section

    sections.append(latent_paths_section(model, data, fig_dir))
    return sections


def distinct_drawn_rows(model, data: TensorData, name: str, k: int, scan: int = 2000) -> torch.Tensor:
    """Up to k rows (of the first `scan`) where `name` is present, each drawn as a text no earlier
    row has (distinct captions or classes), in data order."""
    present = data.mask[name][:scan].nonzero().flatten()
    seen: dict[str, int] = {}
    for text, i in zip(model.modalities[name].drawn(data.data[name][present]), present.tolist()):
        if len(seen) < k and text not in seen:
            seen[text] = i
    return torch.tensor(list(seen.values()), dtype=torch.long)
