"""The conv image encoder and decoder in the default (NCHW) and channels-last memory formats:
a training step (forward, backward, Adam) and an evaluation pass at batch 64, for 28x28 grey,
32x32 and 64x64 RGB images, the two formats alternating so load on the machine hits both alike.

    python benchmarks/bench_memory_format.py [--quick] [--threads N]

Writes benchmarks/results/memory-format.json (best of the rounds, ms per batch, and the
channels-last speed-up). The library's ConvEncoder/ConvDecoder run channels-last; this times
both layouts on the same networks by converting the input and the decoder's first feature map.
"""
from __future__ import annotations

import time

import torch

import common as c
from omnivae.modalities.image import ConvDecoder, ConvEncoder, conv_sizes

CHANNELS = [32, 64, 128]
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def nets(shape):
    enc = ConvEncoder(shape, CHANNELS, 32)
    return enc, ConvDecoder(shape, CHANNELS, conv_sizes(shape, CHANNELS), enc.flat, 16)


def forward(enc, dec, x, z, fmt):
    """The encoder's and decoder's layers with their inputs in memory format `fmt`."""
    h = enc.head(enc.convs(x.contiguous(memory_format=fmt)).flatten(1))
    y = dec.deconvs(dec.fc(z).view(-1, *dec.flat).contiguous(memory_format=fmt)).contiguous()
    return h, y


def measure(shape, fmt, train: bool, reps: int, batch: int = 64) -> float:
    torch.manual_seed(0)
    enc, dec = nets(shape)
    x, z = torch.rand(batch, *shape), torch.randn(batch, 16)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()])

    def step():
        h, y = forward(enc, dec, x, z, fmt)
        loss = h.square().mean() + (y - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def evaluate():
        with torch.no_grad():
            forward(enc, dec, x, z, fmt)

    return c.time_ms(step if train else evaluate, reps)


def main() -> None:
    args = c.parse_args(__doc__)
    threads = c.setup(args.threads)
    t0 = time.perf_counter()
    rounds, reps = (1, 3) if args.quick else (3, 20)
    runs = []
    for shape in SHAPES:
        for train in (True, False):
            times = {"nchw": [], "channels_last": []}
            for _ in range(rounds):  # alternate the two layouts
                times["nchw"].append(measure(shape, torch.contiguous_format, train, reps))
                times["channels_last"].append(measure(shape, torch.channels_last, train, reps))
            best = {k: round(min(v), 2) for k, v in times.items()}
            runs.append({"shape": list(shape), "pass": "train step" if train else "eval", "ms": best,
                         "speedup": round(best["nchw"] / best["channels_last"], 3)})
    result = {"workload": "memory-format", "quick": args.quick, "machine": c.machine_info(float("nan")),
              "settings": {"threads": threads, "batch": 64, "channels": CHANNELS, "rounds": rounds, "reps": reps},
              "runs": runs,
              "targets": [c.target(f"channels-last no slower: {r['pass']} {r['shape']}", r["speedup"], 1.0, ">=")
                          for r in runs]}
    lines = "\n".join(f"  {r['shape']} {r['pass']}: NCHW {r['ms']['nchw']} ms, channels-last "
                      f"{r['ms']['channels_last']} ms ({r['speedup']}x)" for r in runs)
    c.save_result(result, t0, args.out, lines)


if __name__ == "__main__":
    main()
