"""Embeddings and cross-modal search: encode images and captions into the shared latent
space, search test images with a caption, score retrieval and probe the embeddings.

    python examples/embed_and_retrieve.py            # 6,000 examples, up to 20 epochs
    python examples/embed_and_retrieve.py --quick    # 300 examples, 1 epoch (OMNIVAE_EXAMPLE_QUICK=1 too)
"""
import argparse
import os
import tempfile
from pathlib import Path

from omnivae.metrics import linear_probe
from omnivae.run import train_run
from omnivae.tasks.embed import embed, load_embeddings, save_embeddings
from omnivae.tasks.retrieve import RetrievalIndex, retrieval_metrics


def main(quick: bool, out: Path) -> None:
    config = {"data": {"source": "shapes", "options": {"n": 300 if quick else 6000, "level": "easy"}},
              # embeddings and search use the encoders only: no conditional prior needed
              "model": {"model": "mopoe", "latent_dim": 16, "conditional_prior": None},
              "train": {"max_epochs": 1 if quick else 20, "batch_size": 64, "progress": False,
                        "num_threads": 1 if quick else None}}  # one thread is faster on tiny batches
    run = train_run(config, out / "run", overwrite=True)
    model, train, test = run.model, run.splits.train, run.splits.test

    # latent means [N, 16] from one modality, or from several (their joint posterior)
    z_image = embed(model, test, given=["image"])
    z_text = embed(model, test, given=["text"])
    z_both = embed(model, test)
    print("embeddings:", z_image.shape, z_text.shape, z_both.shape)
    save_embeddings(z_image, out / "z_image.npy")          # or .parquet (needs omnivae[tables])
    assert (load_embeddings(out / "z_image.npy") == z_image).all()

    # search the test images with a caption (cosine similarity of latent means)
    index = RetrievalIndex(model, test, "image")
    result = index.query({"text": ["a red circle"]}, given=["text"], k=3)
    for rank, (i, score) in enumerate(zip(result.indices[0], result.scores[0]), 1):
        print(f"  rank {rank}: test example {i} (its caption: {test.modalities['text'][i]!r}), cosine {score:.3f}")

    # Recall@K and median rank in both directions; an item is relevant when all its labels match the query's
    for direction, report in retrieval_metrics(model, test, "text", "image").items():
        print(f"retrieval {direction}: R@1 {report['R@1']:.2f}, R@5 {report['R@5']:.2f}, "
              f"median rank {report['median_rank']:.0f}")

    # a linear probe: how well a logistic regression reads the shape from image embeddings
    accuracy = linear_probe(embed(model, train, given=["image"]), train.targets["shape"],
                            z_image, test.targets["shape"])
    print(f"linear probe (shape from image embedding): {accuracy:.2f}")


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
