"""shapes-captions: the built-in synthetic image + caption data (omnivae.data.shapes,
level "easy") with the demo's default model options (conv image encoder/decoder, GRU text
model, latent 16, batch 64, as in omnivae.tasks.demo.demo_config), for MoPoE (the demo's
default), MVAE and MMVAE. Generation: caption -> image and image -> caption (greedy)."""
from __future__ import annotations

import time
from pathlib import Path

import common as c  # benchmarks/common.py (the script's folder is on sys.path)

from omnivae.data.shapes import make_shapes
from omnivae.data.tensors import TensorData
from omnivae.run import resolve_model_config
from omnivae.tasks.demo import demo_config

NAME, N, LEVEL = "shapes-captions", 6000, "easy"


def main(quick: bool = False, out: Path = c.RESULTS, threads: int | None = None) -> Path:
    t0 = time.perf_counter()
    c.setup(threads)
    plan = c.Plan(quick)
    demo = demo_config(minutes=1.0, level=LEVEL, model="mopoe", n=N, seed=0, progress=False)
    batch, lr = demo["train"]["batch_size"], demo["train"]["lr"]
    result = c.new_result(NAME, quick, n=N, level=LEVEL, batch_size=batch, lr=lr, warmup=plan.warmup,
                          window=plan.window, windows=plan.windows, rounds=plan.rounds)
    raw = make_shapes(n=4 * batch if quick else N, level=LEVEL, seed=0)
    test = make_shapes(n=batch if quick else 1000, level=LEVEL, seed=1)
    for family in ("mopoe", "mvae", "mmvae"):
        config = resolve_model_config({**demo["model"], "model": family}, raw).to_dict()
        c.run_model(result, family, config, raw, batch, plan, lambda m: TensorData.from_raw(m, test).batch(),
                    [("text", "image"), ("image", "text")], lr=lr,
                    options={k: c.OPTION_VARIANTS[k] for k in ("fp32", "bf16-mixed")} if family == "mopoe" else False)
    return c.finish(result, t0, out)


if __name__ == "__main__":
    args = c.parse_args(__doc__)
    main(args.quick, args.out, args.threads)
