"""serve: latency of `omnivae serve` under load. The real command runs in a subprocess on a
free loopback port; each workload sends its requests all at once (concurrency = requests,
httpx.AsyncClient in this process, so the client shares the machine with the server) after a
few sequential warm-up requests, and records per-request latency (p50, p95, max), errors
(any answer other than 200) and throughput.

Workloads (caption -> image, n = 4 images per request unless said):
  generate-sample  the default path: codes drawn from the model's conditional prior
  generate-mean    temperature 0: the posterior mean decoded (no flow sampling)
  caption          image -> caption (posterior mean, greedy decoding)
  retrieve         image query, top 8 of the indexed images

The model: --model DIR [--index DATA], else a small shapes model (16 px, image + caption,
MoPoE, latent 8) trained here first (about a minute; --quick: one epoch).

    python benchmarks/bench_serve.py [--requests 200] [--quick] [--threads 1] [--out benchmarks/results]

Writes <out>/serve.json and prints one line per workload.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import common as c  # benchmarks/common.py (the script's folder is on sys.path)

NAME = "serve"
TRAIN = {
    "data": {"source": "shapes", "options": {"n": 2000, "level": "easy", "image_size": 16}, "test_fraction": 0.2},
    "model": {"model": "mopoe", "latent_dim": 8, "modalities": {
        "image": {"arch": "mlp", "hidden": [128]}, "text": {"hidden": 32, "embed_dim": 16, "max_len": 6}}},
    "train": {"max_epochs": 15, "batch_size": 32, "lr": 2e-3, "progress": False, "tensorboard": False,
              "num_threads": 1, "seed": 0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, index: str | None, port: int, threads: int, log: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("omnivae")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-c", "from omnivae.cli import app; app()"]
    cmd += ["serve", "--model", str(model), "--port", str(port), "--threads", str(threads), "--log-level", "warning"]
    cmd += ["--index", index] if index else []
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"omnivae serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("omnivae serve did not answer within 180 s")


async def flood(base: str, path: str, body: dict, requests: int) -> tuple[list[int], list[float], float]:
    async def one(client):
        start = time.perf_counter()
        try:
            status = (await client.post(path, json=body)).status_code
        except httpx.HTTPError:
            status = -1  # no answer at all
        return status, time.perf_counter() - start

    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        for _ in range(3):  # warm-up, sequential
            await client.post(path, json=body)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client) for _ in range(requests)))
        wall = time.perf_counter() - t0
    return [s for s, _ in results], [t for _, t in results], wall


def drawn_as(info: dict) -> dict[str, str]:
    """The first modality of each way the server draws values ("picture", "words"), by name."""
    out = {}
    for m in info["modalities"]:
        out.setdefault(m["drawn"], m["name"])
    return out


def workloads(info: dict, image_url: str | None) -> dict[str, tuple[str, dict]]:
    roles = drawn_as(info)
    text, image = roles.get("words"), roles.get("picture")
    out = {}
    if text and image:
        gen = {"inputs": {text: ["a red circle"]}, "targets": [image], "n": 4}
        out["generate-sample"] = ("/api/generate", {**gen, "seed": 0})
        out["generate-mean"] = ("/api/generate", {**gen, "temperature": 0})
        if image_url:
            out["caption"] = ("/api/caption", {"image": image_url})
    if image and image_url and info["index"]["loaded"]:
        out["retrieve"] = ("/api/retrieve", {"query": {image: [image_url]}, "gallery": image, "k": 8})
    return out


def png_url(raw, image: str | None) -> str | None:
    """The first example of modality `image` (a picture) as a PNG data URL."""
    if raw is None or image is None:
        return None
    a = np.asarray(raw.modalities[image][0])
    a = a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: train a small one)")
    parser.add_argument("--index", default=None, help="--index of omnivae serve (default: the trained run)")
    parser.add_argument("--requests", type=int, default=200, help="requests per workload, all sent at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--quick", action="store_true", help="one training epoch, 50 requests")
    parser.add_argument("--out", type=Path, default=c.RESULTS, help="folder for serve.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    requests = 50 if args.quick else args.requests
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve."))
    model, index, raw = args.model, args.index, None
    if model is None:
        from omnivae.run import train_run

        config = {**TRAIN, "train": {**TRAIN["train"], "max_epochs": 1 if args.quick else TRAIN["train"]["max_epochs"]}}
        run = train_run(config, tmp / "run")
        model, index, raw = run.run_dir / "model", str(run.run_dir), run.splits.test
    elif index is not None:
        from omnivae.serve.app import load

        raw = load(model, index, (), "auto")[1]
    result = c.new_result(NAME, args.quick, requests=requests, concurrency=requests, threads=args.threads,
                          model=str(args.model or "shapes 16 px, MoPoE latent 8, trained here"),
                          index=args.index or ("the trained run's test split" if args.model is None else None),
                          client="httpx.AsyncClient on the same machine")
    port = free_port()
    proc = start_server(model, index, port, args.threads, tmp / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        info = httpx.get(base + "/api/info").json()
        result["settings"].update(server_model=info["model"], index_size=info["index"]["size"])
        for name, (path, body) in workloads(info, png_url(raw, drawn_as(info).get("picture"))).items():
            codes, times, wall = asyncio.run(flood(base, path, body, requests))
            ms = np.array(times) * 1000
            errors = sum(code != 200 for code in codes)
            entry = {"model": name, "path": path, "requests": requests, "concurrency": requests,
                     "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
                     "max_ms": round(float(ms.max()), 1), "mean_ms": round(float(ms.mean()), 1),
                     "errors": int(errors), "statuses": sorted({int(s) for s in codes}),
                     "wall_s": round(wall, 2), "requests_per_s": round(requests / wall, 1)}
            result["runs"].append(entry)
            result["targets"].append(c.target(f"{name}: errors under {requests} concurrent requests", errors, 0))
            print(f"{name:16s} {requests} at once: p50 {entry['p50_ms']:.0f} ms, p95 {entry['p95_ms']:.0f} ms, "
                  f"max {entry['max_ms']:.0f} ms, {entry['requests_per_s']:.1f} req/s, errors {errors}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_avg_end"] = os.getloadavg()  # other work on the machine slows every figure
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = c.write_result(NAME, result, args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
