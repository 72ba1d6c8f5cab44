"""Generated image folders (the layout of omnivae.data.folder: PNG files + metadata.jsonl) for the
user-path and streaming benchmarks: a coloured shape on a noisy background, its caption ("a red
circle at the top left") and its shape as a label column. Written by several processes; a folder
that is complete (its `.complete` file holds the settings it was written with) is reused.

    write_folder(Path("/tmp/omnivae-stream-200k"), n=200_000, size=64, mode="RGB", processes=4)
"""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
PLACES = {"top left": (0.3, 0.3), "top right": (0.7, 0.3), "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7)}
CHUNK = 1000


def example(i: int, seed: int) -> tuple[int, int, int]:
    """(shape, colour, place) indices of example i, a pure function of (seed, i)."""
    rng = np.random.default_rng([seed, i])
    return int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(len(PLACES)))


def draw(i: int, seed: int, size: int, mode: str) -> tuple[Image.Image, dict]:
    shape, colour, place = example(i, seed)
    rng = np.random.default_rng([seed, i, 1])
    # noise keeps the PNG files about as large as photos of that size (flat colour compresses to nothing)
    background = rng.integers(60, 110, size=(size, size, 3), dtype=np.uint8)
    im = Image.fromarray(background, "RGB")
    cx, cy = (size * f for f in list(PLACES.values())[place])
    r = size * 0.18
    pen = ImageDraw.Draw(im)
    fill = list(COLOURS.values())[colour]
    if SHAPES[shape] == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif SHAPES[shape] == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    caption = f"a {list(COLOURS)[colour]} {SHAPES[shape]} at the {list(PLACES)[place]}"
    return im.convert(mode), {"file_name": f"images/{i // CHUNK:04d}/{i:07d}.png", "caption": caption,
                              "shape": SHAPES[shape]}


def write_chunk(args: tuple[Path, int, int, int, int, str]) -> list[dict]:
    root, start, stop, seed, size, mode = args
    rows = []
    for i in range(start, stop):
        im, row = draw(i, seed, size, mode)
        path = root / row["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, compress_level=6)
        rows.append(row)
    return rows


def write_folder(root: Path, n: int, size: int, mode: str = "RGB", seed: int = 0, processes: int = 2,
                 label: bool = True) -> dict:
    """Write (or reuse) the folder; returns {"path", "n", "seconds" (0 when reused), "bytes", "reused"}."""
    root = Path(root)
    settings = {"n": n, "size": size, "mode": mode, "seed": seed, "label": label}
    done = root / ".complete"
    if done.is_file() and json.loads(done.read_text()) == settings:
        return {"path": str(root), "n": n, "seconds": 0.0, "bytes": folder_bytes(root), "reused": True}
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = [(root, a, min(n, a + CHUNK), seed, size, mode) for a in range(0, n, CHUNK)]
    with ProcessPoolExecutor(max_workers=processes) as pool, open(root / "metadata.jsonl", "w") as f:
        for rows in pool.map(write_chunk, jobs):
            for row in rows:
                if not label:
                    row.pop("shape")
                f.write(json.dumps(row) + "\n")
    seconds = time.perf_counter() - t0
    done.write_text(json.dumps(settings))
    return {"path": str(root), "n": n, "seconds": round(seconds, 1), "bytes": folder_bytes(root), "reused": False}


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*.png"))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write a generated image folder")
    parser.add_argument("root", type=Path)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--mode", default="RGB")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    print(write_folder(args.root, args.n, args.size, args.mode, processes=args.processes))
