"""End to end: the demo pipeline trains on the built-in data and crosses modalities
far above chance, and writes every artefact it promises."""
import json

import pytest

from omnivae.report.html import read_report_images
from omnivae.tasks.demo import run_demo


@pytest.mark.slow
def test_demo_crosses_modalities_well_above_chance(tmp_path):
    out = tmp_path / "demo"
    # a fixed number of epochs, not a time budget: the result must not depend on machine load
    metrics = run_demo(out, minutes=None, max_epochs=8, level="easy", model="mopoe", n=2400, seed=1, progress=False)
    chance = 1 / 12  # 3 shapes x 4 colours on the easy level
    for pair in ("text->image", "image->text"):
        assert metrics["coherence"][pair]["all"] > max(0.6, 5 * chance), (pair, metrics["coherence"])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for fig in ("text_to_image", "image_to_text", "joint_samples", "reconstructions", "latent_map", "curves"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    html = (out / "report.html").read_text()
    for title in ("Text to image", "Image to text", "Joint samples", "Training curves"):
        assert title in html
    assert len(read_report_images(out / "report.html")) >= 6
