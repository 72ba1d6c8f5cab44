"""Train a small image+caption model on the built-in shapes data, then generate across
modalities: caption -> image, image -> caption, joint samples; save and load the model.

    python examples/shapes_text_image.py            # 6,000 examples, up to 30 epochs
    python examples/shapes_text_image.py --quick    # 300 examples, 1 epoch (seconds; the output is noise)
    OMNIVAE_EXAMPLE_QUICK=1 python examples/shapes_text_image.py    # the same as --quick

Writes into a temporary folder unless --out DIR is given.
"""
import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import omnivae
from omnivae.run import train_run


def main(quick: bool, out: Path) -> None:
    config = {
        "data": {"source": "shapes", "options": {"n": 300 if quick else 6000, "level": "easy"}},
        "model": {"model": "mopoe", "latent_dim": 16},  # modalities (image, text) come from the data
        "train": {"max_epochs": 1 if quick else 30, "batch_size": 64, "progress": False},
    }
    if quick:  # one thread (faster on tiny batches) and a short fit of the conditional prior
        config["train"]["num_threads"] = 1  # (default: all cores, and 60 passes over the data, 100 to 1,500 steps)
        config["model"]["conditional_prior"] = {"steps": 20}
    run = train_run(config, out / "run", overwrite=True)  # also fits the conditional prior
    model = run.model
    print("trained:", model.config.model, "with modalities", model.names)

    # caption -> image: 4 draws per caption, [n, captions, 3, 32, 32] floats in [0, 1]
    captions = ["a red circle", "a blue square"]
    images = model.generate({"text": captions}, given=["text"], targets=["image"], n=4)["image"]
    print("caption -> image:", tuple(images.shape))
    grid = images.permute(1, 3, 0, 4, 2).reshape(len(captions) * 32, 4 * 32, 3)  # rows: captions
    Image.fromarray((grid.numpy() * 255).astype(np.uint8)).save(out / "text_to_image.png")

    # image -> caption, on held-out test images (uint8 [N, 3, 32, 32] as the data holds them)
    test_images = run.splits.test.modalities["image"][:3]
    generated = model.generate({"image": test_images}, given=["image"], targets=["text"], mean=True)["text"]
    for true, made in zip(run.splits.test.modalities["text"][:3], generated):
        print(f"image -> caption: {made!r} (true caption: {true!r})")

    # joint samples: every modality decoded from the same draw
    joint = model.sample(3)
    print("joint samples:", joint["text"])

    # save and load: a folder of config.json, model.safetensors and the tokenizer (no pickle)
    model.save(out / "model")
    loaded = omnivae.load(out / "model")
    z_before = model.encode({"text": captions})
    z_after = loaded.encode({"text": captions})
    print("saved files:", sorted(p.name for p in (out / "model").iterdir()))
    print("reloaded model encodes identically:", bool((z_before == z_after).all()))


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
