"""`create_app(model_dir, index=None)`: a FastAPI app with a JSON API and one web page over
a saved model. Every model call runs on a single worker thread (torch modules here keep
per-call caches and are not safe to run concurrently), with a per-request timeout and a
bound on the requests waiting for it."""
from __future__ import annotations

import asyncio
import functools
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from omnivae.errors import ConfigError, InputError
from omnivae.serve.limits import BodyLimit, Limits
from omnivae.serve.schemas import (
    AnomalyRequest,
    CaptionRequest,
    EmbedRequest,
    GenerateRequest,
    InterpolateRequest,
    RetrieveRequest,
    TraverseRequest,
    batch_inputs,
    model_values,
)
from omnivae.modalities import MODALITY_KINDS, figure_roles
from omnivae.modalities.base import Modality
from omnivae.tasks.generate import seeded
from omnivae.version import __version__

PAGE = Path(__file__).with_name("page.html")


def load(model_dir, index, sets, split):
    """The model, and the index data (None without --index) read as the other verbs read data:
    a run folder (its test split), a built-in source name, a .npz file or a data folder."""
    from omnivae.cli.tasks import _check_split, load_model_and_data
    from omnivae.data.raw import RawData
    from omnivae.io import load_model
    from omnivae.run_folder import RunFolder

    if index is None or isinstance(index, RawData):
        return load_model(model_dir), index
    _check_split(split)
    path = Path(str(index))
    run_dir = path if RunFolder(path).has_config() else None
    loaded = load_model_and_data(Path(model_dir), run_dir, None if run_dir else str(index), list(sets))
    return loaded.model, loaded.get(split)


class Service:
    """The model, the optional index data and what is computed over it once (retrieval
    embeddings per modality, anomaly scores); each method is one request's model work."""

    def __init__(self, model, raw, limits: Limits, source: str | None):
        from omnivae.tasks.detect import AnomalyDetector
        from omnivae.tasks.embed import as_tensor_data
        from omnivae.tasks.retrieve import RetrievalIndex

        self.model, self.raw, self.limits, self.source = model.eval(), raw, limits, source
        self.kinds = {n: model.modalities[n].kind for n in model.names}
        self.galleries, self.scores = {}, {}
        # what the page shows of index rows, encoded once (PNG thumbnails cost more than a search)
        self.row = functools.lru_cache(maxsize=4096)(self._row)
        self.indexed = functools.lru_cache(maxsize=4096)(self._indexed)
        self.picture_names, self.text_names = figure_roles(model.modalities)  # as the kinds draw their values
        if raw is not None:
            data = as_tensor_data(model, raw)
            self.galleries = {n: RetrievalIndex(model, data, n) for n in model.names
                              if n in data.data and bool(data.mask[n].any())}
            with seeded(0):
                self.scores = AnomalyDetector(model).score(data)

    # -- helpers ------------------------------------------------------------------------------
    def first(self, able: list[str], wanted: str, name: str | None, what: str) -> str:
        """The modality named `name` (checked to be one of `able`), else the first of `able`;
        `wanted` says in words how `able` modalities are drawn."""
        if name is not None:
            self.model.check_names([name], what)
            if name not in able:
                raise InputError(f"{what} {name!r} is a {self.kinds[name]} modality, which is not {wanted}")
            return name
        if not able:
            raise InputError(f"this model has no modality {wanted} (it has {self.kinds})")
        return able[0]

    def target(self, name: str | None) -> str:
        from omnivae.tasks.latent import default_target

        return default_target(self.model, name)

    def at_most(self, value: int, limit: int, what: str) -> int:
        if value > limit:
            raise InputError(f"{what} is {value}; this server allows at most {limit}")
        return value

    def need_index(self, feature: str) -> None:
        if self.raw is None:
            raise HTTPException(409, f"{feature} needs indexed data: start the server with --index DATA")

    def item(self, name: str, value) -> object:
        return self.model.modalities[name].json_item(value)

    def _indexed(self, name: str, i: int):
        """Index row i of modality `name` (which the model may not have) as a JSON value."""
        return MODALITY_KINDS[self.raw.kinds[name]].json_item(self.raw.modalities[name][i])

    def _row(self, i: int) -> dict:
        """What the page shows of index row i: a thumbnail, a caption and a description."""
        from omnivae.cli.tasks import describe

        raw, out = self.raw, {"index": int(i), "thumbnail": None, "caption": None}
        for name, kind in raw.kinds.items():  # the first of each field that a kind's preview gives
            if raw.mask[name][i]:
                for field, value in MODALITY_KINDS[kind].preview(raw.modalities[name][i]).items():
                    out[field] = value if out.get(field) is None else out[field]
        out["description"] = describe(raw, int(i), skip="")
        return out

    def codes(self, values: dict) -> torch.Tensor:
        """Full codes [B, T] (what the decoders need: the joint posterior mean) of user inputs."""
        batch = self.model.as_batch(values)
        mu, logvar, present = self.model.encode_unimodal(batch, list(values))
        return self.model.full_code(mu, logvar, present)

    # -- endpoints ------------------------------------------------------------------------------
    def info(self) -> dict:
        m = self.model
        mods = []
        for n in m.names:
            drawn = "picture" if n in self.picture_names else "words" if n in self.text_names else None
            spec, entry = m.modalities[n].spec, {"name": n, "kind": self.kinds[n], "drawn": drawn}
            for key in ("shape", "max_len", "num_classes", "classes", "dim"):
                if getattr(spec, key, None) is not None:
                    entry[key] = list(spec.shape) if key == "shape" else getattr(spec, key)
            mods.append(entry)
        index = {"loaded": self.raw is not None, "size": len(self.raw) if self.raw is not None else 0,
                 "source": self.source, "galleries": list(self.galleries), "scores": sorted(self.scores)}
        return {"model": m.config.model, "omnivae_version": __version__, "latent_dim": m.config.latent_dim,
                "code_dim": m.full_code_dim(), "conditional_prior": m.uses_conditional_prior("auto"),
                "modalities": mods, "index": index, "limits": self.limits.to_dict()}

    @torch.no_grad()
    def generate(self, req: GenerateRequest) -> dict:
        from omnivae.tasks.generate import draws

        n = self.at_most(req.n, self.limits.max_n, "n")
        values = batch_inputs(self.model, req.inputs, self.limits) if req.inputs else {}
        out, seed = draws(self.model, values, req.targets, n, req.seed, req.temperature, sampler=req.sampler)
        outputs = {k: [[self.item(k, x) for x in items] for items in rows] for k, rows in out.items()}
        return {"seed": seed, "n": n, "kinds": {k: self.kinds[k] for k in outputs}, "outputs": outputs}

    @torch.no_grad()
    def caption(self, req: CaptionRequest) -> dict:
        image = self.first(self.picture_names, "drawn as a picture", req.modality, "modality")
        text = self.first(self.text_names, "drawn as a short text", req.target, "target")
        values = {image: model_values(self.model, image, [req.image], self.limits)}
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        with seeded(seed):
            out = self.model.generate(values, given=[image], targets=[text], mean=req.mean)
        return {"caption": self.item(text, out[text][0]), "modality": image, "target": text, "seed": seed}

    @torch.no_grad()
    def embed(self, req: EmbedRequest) -> dict:
        values = batch_inputs(self.model, req.inputs, self.limits)
        given = self.model.check_names(req.given, "given") if req.given else None
        z = self.model.encode(values, given=given)
        return {"latent_dim": int(z.shape[1]), "embeddings": [Modality.json_item(row) for row in z]}

    @torch.no_grad()
    def retrieve(self, req: RetrieveRequest) -> dict:
        self.need_index("retrieval")
        self.model.check_names([req.gallery], "gallery")
        if req.gallery not in self.galleries:
            raise InputError(f"the index has no {req.gallery!r} items; it can search {list(self.galleries)}")
        k = self.at_most(req.k, self.limits.max_k, "k")
        values = batch_inputs(self.model, req.query, self.limits)
        found = self.galleries[req.gallery].query(values, given=list(values), k=k, score=req.score)
        results = []
        for idx, scores in zip(found.indices, found.scores):
            results.append([{**self.row(int(i)), "score": Modality.json_item(s),
                             "item": self.indexed(req.gallery, int(i))}
                            for i, s in zip(idx, scores)])
        return {"gallery": req.gallery, "score": req.score, "results": results}

    @torch.no_grad()
    def anomalies(self, req: AnomalyRequest) -> dict:
        from omnivae.data.tensors import TensorData
        from omnivae.tasks.detect import AnomalyDetector

        batch = self.model.as_batch(batch_inputs(self.model, req.inputs, self.limits))
        scores = AnomalyDetector(self.model, seed=req.seed).score(TensorData(batch.data, {}))
        return {"scores": {k: [Modality.json_item(x) for x in v] for k, v in scores.items()}}

    def top_anomalies(self, k: int, score: str) -> dict:
        self.need_index("the anomaly ranking")
        k = self.at_most(k, self.limits.max_k, "k")
        if score not in self.scores:
            raise InputError(f"unknown score {score!r}; the index has {sorted(self.scores)}")
        s = self.scores[score]
        order = np.argsort(-np.where(np.isfinite(s), s, -np.inf), kind="stable")[:k]
        rows = [{**self.row(int(i)), "rank": r + 1, "score": Modality.json_item(s[i]),
                 "scores": {name: Modality.json_item(v[i]) for name, v in self.scores.items()}}
                for r, i in enumerate(order)]
        return {"score": score, "size": len(s), "rows": rows}

    @torch.no_grad()
    def interpolate(self, req: InterpolateRequest) -> dict:
        from omnivae.tasks.latent import interpolate_values

        steps = self.at_most(req.steps, self.limits.max_steps, "steps")
        target = self.target(req.target)
        values = {req.modality: model_values(self.model, req.modality, [req.a, req.b], self.limits)}
        found = interpolate_values(self.model, values, target, steps, req.path)
        return {"target": target, "kind": self.kinds[target], "t": found.t, "path": found.path,
                "outputs": [self.item(target, found.outputs[i]) for i in range(steps)]}

    @torch.no_grad()
    def traverse(self, req: TraverseRequest) -> dict:
        from omnivae.tasks.latent import check_dim, traverse

        steps = self.at_most(req.steps, self.limits.max_steps, "steps")
        target = self.target(req.target)
        check_dim(self.model, req.dim)
        values = batch_inputs(self.model, req.inputs, self.limits) if req.inputs else None
        found = traverse(self.model, req.dim, target, values, req.low, req.high, steps)
        return {"target": target, "kind": self.kinds[target], "dim": req.dim, "values": found.t,
                "outputs": [self.item(target, found.outputs[i]) for i in range(steps)]}


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return 422, "; ".join(parts) or "invalid request"


def create_app(model_dir, index=None, limits: Limits | None = None, sets=(), split: str = "auto",
               threads: int | None = None) -> FastAPI:
    """The app over the model saved in `model_dir`. `index`: data to search and rank (a run
    folder, a source name, a .npz file, a data folder or a RawData); `sets`: data option
    overrides ("data.options.n=500"); `split`: which part of it (see `omnivae retrieve`);
    `threads`: torch threads for the model (process-wide; None: leave them as set)."""
    limits = limits or Limits()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    if threads:
        torch.set_num_threads(threads)
    model, raw = load(model_dir, index, sets, split)
    source = None if index is None else (str(index) if not hasattr(index, "modalities") else "in-memory data")
    service = Service(model, raw, limits, source)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnivae-model",
                                  initializer=torch.set_num_threads if threads else None,
                                  initargs=(threads,) if threads else ())
    waiting = [0]

    @asynccontextmanager
    async def lifespan(_app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="omnivae", version=__version__, lifespan=lifespan,
                  description="Generate, caption, embed, retrieve, score and explore with a saved omnivae model.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    async def run(fn, *args):
        if waiting[0] >= limits.max_queue:
            raise HTTPException(503, f"the server is busy ({waiting[0]} requests in progress); try again shortly")
        waiting[0] += 1
        try:
            job = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
            return await asyncio.wait_for(job, limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the model did not answer within {limits.timeout_s:g} s") from None
        finally:
            waiting[0] -= 1

    @app.exception_handler(InputError)
    async def _input_error(_request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ConfigError)
    async def _config_error(_request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc):
        status, message = validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc):  # the traceback goes to the server log, never to the client
        return JSONResponse({"detail": f"internal server error ({type(exc).__name__})"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        if not PAGE.is_file():  # an installation built without the package data
            raise HTTPException(404, "page.html is not part of this installation; the API works (/docs)")
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/api/info", summary="Model and index information")
    async def info():
        return service.info()

    @app.post("/api/generate", summary="Generate any modalities from any others (or joint samples)")
    async def generate(req: GenerateRequest):
        return await run(service.generate, req)

    @app.post("/api/caption", summary="Caption an image")
    async def caption(req: CaptionRequest):
        return await run(service.caption, req)

    @app.post("/api/embed", summary="Latent means of the given inputs")
    async def embed(req: EmbedRequest):
        return await run(service.embed, req)

    @app.post("/api/retrieve", summary="Top-k items of one modality of the index for a query")
    async def retrieve(req: RetrieveRequest):
        return await run(service.retrieve, req)

    @app.post("/api/anomalies", summary="Anomaly scores of the given inputs")
    async def anomalies(req: AnomalyRequest):
        return await run(service.anomalies, req)

    @app.get("/api/anomalies/top", summary="The most anomalous examples of the index")
    async def top_anomalies(k: int = Query(10, ge=1), score: str = Query("neg_elbo")):
        return await run(service.top_anomalies, k, score)

    @app.post("/api/interpolate", summary="Decode the path between the codes of two inputs")
    async def interpolate(req: InterpolateRequest):
        return await run(service.interpolate, req)

    @app.post("/api/traverse", summary="Vary one latent dimension from an input or the prior mean")
    async def traverse(req: TraverseRequest):
        return await run(service.traverse, req)

    return app
