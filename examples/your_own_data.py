"""Bring your own data: write a folder of PNG images with a metadata.jsonl (the Hugging Face
ImageFolder layout) and the same data as an .npz, load both, look at what omnivae
understood, then train on the folder and predict a label from an image.

    python examples/your_own_data.py              # 2,000 examples, up to 15 epochs
    python examples/your_own_data.py --quick      # 200 examples, 1 epoch (OMNIVAE_EXAMPLE_QUICK=1 too)

The pictures come from the built-in shapes generator so the script needs no download;
replace `write_folder` with your own files.
"""
import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from omnivae.data.arrays import load_arrays
from omnivae.data.folder import DataWarning, load_folder
from omnivae.data.inspect import describe
from omnivae.data.shapes import make_shapes
from omnivae.run import train_run


def write_folder(root: Path, n: int) -> None:
    """root/0000.png ... plus metadata.jsonl: file_name, caption, shape (a label), colour_rgb (a vector)."""
    shapes = make_shapes(n=n, level="easy", seed=1)
    names = shapes.info["classes"]["shape"]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            name = f"{i:04d}.png"
            Image.fromarray(shapes.modalities["image"][i].transpose(1, 2, 0)).save(root / name)
            pixels = shapes.modalities["image"][i].reshape(3, -1)
            row = {"file_name": name,
                   "caption": shapes.modalities["text"][i],
                   "shape": names[shapes.targets["shape"][i]],
                   "colour_rgb": [round(float(c), 2) for c in pixels.max(1) / 255]}
            if i == 0:
                row["caption"] = ""        # an empty caption: the caption is marked missing for this row
            if i == 1:
                row["file_name"] = "no_such_file.png"  # a missing image: the image is marked missing
            f.write(json.dumps(row) + "\n")


def main(quick: bool, out: Path) -> None:
    n = 200 if quick else 2000
    folder = out / "my_data"
    write_folder(folder, n)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        data = load_folder(folder)
    for w in caught:
        print("warning:", str(w.message).splitlines()[0])
    info = describe(data)
    print("examples:", info["examples"], "complete:", info["complete"])
    for name, entry in info["modalities"].items():
        print(f"  {name}: kind={entry['kind']}, missing={entry['missing']}")

    # the same data as arrays: one array per modality, kinds from dtype and shape
    np.savez(out / "my_data.npz",
             image=data.modalities["image"],                                       # uint8 [N,3,32,32] -> image
             caption=np.array([c or "" for c in data.modalities["caption"]]),    # unicode strings -> text ("" = missing)
             shape=data.modalities["shape"],                                     # int64 [N] -> categorical
             colour_rgb=data.modalities["colour_rgb"])                           # float32 [N,3] -> vector
    arrays = load_arrays(out / "my_data.npz")
    print("npz kinds:", arrays.kinds)

    # train on the folder (the same as: omnivae train --data my_data --out run)
    config = {"data": {"source": "folder", "options": {"path": str(folder)}},
              "model": {"model": "mopoe", "latent_dim": 16},
              "train": {"max_epochs": 1 if quick else 15, "batch_size": 64, "progress": False}}
    if quick:  # one thread (faster on tiny batches) and a short fit of the conditional prior
        config["train"]["num_threads"] = 1  # (default: all cores, and 60 passes over the data, 100 to 1,500 steps)
        config["model"]["conditional_prior"] = {"steps": 20}
    run = train_run(config, out / "run", overwrite=True)
    model = run.model
    test = run.splits.test
    predicted = model.generate({"image": test.modalities["image"][:5]}, given=["image"],
                               targets=["shape"], mean=True)["shape"]
    truth = [model.modalities["shape"].spec.classes[i] for i in test.modalities["shape"][:5]]
    print("image -> shape label:", predicted, "true:", truth)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and one epoch")
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: a temporary one)")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("OMNIVAE_EXAMPLE_QUICK") == "1"
    if args.out is not None:
        main(quick, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(quick, Path(tmp))
