"""Report figures and the HTML page: valid PNGs, clear errors, escaped text, embedded images."""

import io
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.text import Text
from PIL import Image

from omnivae.errors import InputError
from omnivae.report import (
    Section,
    anomaly_examples,
    captioned_images,
    image_grid,
    latent_map,
    read_metrics,
    read_report_images,
    retrieval_examples,
    scalar_curve,
    text_to_image_grid,
    training_curves,
    write_report,
)
from omnivae.report import figures

CSV = """epoch,step,train/loss_step,val/loss,train/loss_epoch,lr-Adam,note
0,9,1.5,,,0.001,a
0,19,1.2,,,0.001,b
0,19,,1.1,1.3,,
1,29,0.9,,,0.001,c
1,39,0.8,,,0.001,d
1,39,,0.85,0.85,,
"""


def assert_png(path, min_side=100):
    """The file is a decodable PNG of reasonable size that is not one flat colour."""
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8
    assert not list(path.parent.glob(".*.tmp*")), "temporary file left behind"
    return pixels


@pytest.fixture
def imgs():
    return torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_image_grid_flat_and_labelled_rows(tmp_path, imgs):
    out = image_grid(imgs, tmp_path / "grid.png", nrow=3, title="samples")
    assert out == tmp_path / "grid.png"
    assert_png(out)
    rows = torch.rand(2, 4, 1, 10, 10) * 3 - 1  # out of range values are clamped
    assert_png(image_grid(rows, tmp_path / "rows.png", row_labels=["a", "b"], col_labels=list("wxyz")))


def test_image_grid_draws_the_pixels(tmp_path):
    red = torch.zeros(4, 3, 16, 16)
    red[:, 0] = 1.0
    pixels = np.asarray(Image.open(image_grid(red, tmp_path / "red.png")).convert("RGB")).astype(int)
    is_red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert is_red.mean() > 0.3


@pytest.mark.parametrize("shape", [(4, 2, 8, 8), (8, 8), (4, 3, 8), (2, 4, 5, 8, 8), (0, 3, 8, 8)])
def test_image_grid_rejects_bad_shapes(tmp_path, shape):
    with pytest.raises(InputError, match="images"):
        image_grid(torch.rand(shape), tmp_path / "bad.png")


def test_image_grid_rejects_bad_labels_and_nan(tmp_path, imgs):
    with pytest.raises(InputError, match="row_labels"):
        image_grid(torch.rand(2, 3, 1, 8, 8), tmp_path / "x.png", row_labels=["only one"])
    with pytest.raises(InputError, match="NaN"):
        image_grid(torch.full((2, 1, 8, 8), float("nan")), tmp_path / "x.png")


def test_captioned_images(tmp_path, imgs):
    caps = ["a red square at the top left corner of a very long caption " * 3] + ["blue circle"] * 5
    assert_png(captioned_images(imgs, caps, tmp_path / "cap.png", true_captions=["<b>truth</b>"] * 6, ncol=3))
    several = [["first", "second"]] * 6
    assert_png(captioned_images(imgs.numpy(), several, tmp_path / "cap2.png"))
    with pytest.raises(InputError, match="captions"):
        captioned_images(imgs, ["too few"], tmp_path / "bad.png")
    with pytest.raises(InputError, match="true_captions"):
        captioned_images(imgs, caps, tmp_path / "bad.png", true_captions=["x"])


def test_text_to_image_grid(tmp_path):
    assert_png(text_to_image_grid(["a green triangle", "a red circle"], torch.rand(2, 3, 3, 16, 16), tmp_path / "t.png"))
    with pytest.raises(InputError, match="prompts"):
        text_to_image_grid(["one"], torch.rand(2, 3, 3, 16, 16), tmp_path / "bad.png")
    with pytest.raises(InputError, match="images"):
        text_to_image_grid(["one"], torch.rand(3, 3, 16, 16), tmp_path / "bad.png")


@pytest.mark.parametrize("dim,method", [(1, "pca"), (2, "pca"), (6, "pca"), (6, "tsne")])
def test_latent_map(tmp_path, dim, method):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    z = rng.normal(size=(120, dim)) + labels[:, None]
    assert_png(latent_map(torch.as_tensor(z), labels, tmp_path / "z.png", label_names=list("abcd"), method=method))


def test_latent_map_errors(tmp_path):
    z = np.zeros((10, 3))
    with pytest.raises(InputError, match="z"):
        latent_map(np.zeros(10), np.zeros(10, int), tmp_path / "x.png")
    with pytest.raises(InputError, match="labels"):
        latent_map(z, np.zeros(9, int), tmp_path / "x.png")
    with pytest.raises(InputError, match="method"):
        latent_map(z, np.zeros(10, int), tmp_path / "x.png", method="umap")
    with pytest.raises(InputError, match="label_names"):
        latent_map(z, np.arange(10), tmp_path / "x.png", label_names=["a"])


def test_training_curves_with_sparse_rows(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(CSV)
    x_name, series = read_metrics(csv_path)
    assert x_name == "step"
    assert set(series) == {"train/loss_step", "val/loss", "train/loss_epoch"}
    xs, ys = series["val/loss"]
    assert xs.tolist() == [19, 39] and ys.tolist() == [1.1, 0.85]
    assert series["train/loss_step"][1].tolist() == [1.5, 1.2, 0.9, 0.8]
    assert_png(training_curves(csv_path, tmp_path / "curves.png"))
    assert_png(training_curves(csv_path, tmp_path / "lr.png", keys=["lr-Adam"]))


def test_training_curves_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    no_loss = tmp_path / "no_loss.csv"
    no_loss.write_text("epoch,step,acc\n0,1,0.5\n")
    with pytest.raises(InputError, match="no numeric columns"):
        training_curves(no_loss, tmp_path / "x.png")
    text_only = tmp_path / "text.csv"
    text_only.write_text("step,loss_name\n1,abc\n")
    with pytest.raises(InputError, match="no numeric columns"):
        training_curves(text_only, tmp_path / "x.png")
    (tmp_path / "m.csv").write_text(CSV)
    with pytest.raises(InputError, match="nope"):
        training_curves(tmp_path / "m.csv", tmp_path / "x.png", keys=["nope"])


def test_retrieval_examples_both_directions(tmp_path, imgs):
    scores = np.random.default_rng(0).random((3, 4))
    texts = [["a caption", "another longer caption that wraps over lines", "c", "d"]] * 3
    assert_png(retrieval_examples(imgs[:3], texts, scores, tmp_path / "i2t.png"))
    assert_png(retrieval_examples(["red", "blue", "green"], torch.rand(3, 4, 3, 8, 8), scores, tmp_path / "t2i.png"))
    with pytest.raises(InputError, match="scores"):
        retrieval_examples(imgs[:3], texts, scores[:, :2], tmp_path / "bad.png")
    with pytest.raises(InputError, match="results"):
        retrieval_examples(imgs[:2], texts, scores, tmp_path / "bad.png")


def test_anomaly_examples(tmp_path, imgs):
    scores = np.arange(6.0)
    assert_png(anomaly_examples(imgs, [f"caption {i}" for i in range(6)], scores, tmp_path / "a.png", k=4))
    assert_png(anomaly_examples(None, [f"text number {i}" for i in range(6)], scores, tmp_path / "t.png"))
    with pytest.raises(InputError, match="neither"):
        anomaly_examples(None, None, scores, tmp_path / "bad.png")
    with pytest.raises(InputError, match="images"):
        anomaly_examples(imgs, None, np.arange(5.0), tmp_path / "bad.png")
    with pytest.raises(InputError, match="scores"):
        anomaly_examples(imgs, None, np.zeros((6, 2)), tmp_path / "bad.png")


def test_scalar_curve(tmp_path):
    ys = {"mvae": [1.0, 2.0, 3.0, 4.0], "mopoe": [1.0, 4.0, float("nan"), 64.0]}
    assert_png(scalar_curve([1, 2, 4, 8], ys, tmp_path / "s.png", "modalities", "ms/step", "step time", logy=True))
    with pytest.raises(InputError, match="mvae"):
        scalar_curve([1, 2, 3], ys, tmp_path / "bad.png")
    with pytest.raises(InputError, match="log-scale"):
        scalar_curve([1, 2, 4, 8], {"a": [0.0, 1, 2, 3]}, tmp_path / "bad.png", logy=True)


def test_import_does_not_touch_pyplot():
    code = "import sys, omnivae.report; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_html_report(tmp_path, imgs):
    grid = image_grid(imgs, tmp_path / "sample_grid.png")
    curve = scalar_curve([1, 2], {"a": [1, 2]}, tmp_path / "curve.png")
    sections = [
        Section("Samples & grids", text="first paragraph\n\nA caption <script>alert(1)</script>", images=[grid]),
        Section("Metrics", table={"coherence": {"img->txt": 0.123456789, "n": 3}, "ok": True}),
        Section("Runs", table=[{"model": "mvae", "nll": 12.3456}, {"model": "mopoe", "time": {"ms": 5.0}}],
                images=[curve]),
    ]
    out = write_report(tmp_path / "out" / "report.html", "Report <1>", sections)
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Report &lt;1&gt;" in page and "Samples &amp; grids" in page
    assert "coherence.img-&gt;txt" in page and "0.1235" in page and "12.35" in page and "time.ms" in page
    assert "Generated " in page
    anchors = re.findall(r'<a href="#([^"]+)">', page)
    assert len(anchors) == 3
    for anchor in anchors:
        assert f'<section id="{anchor}"><h2>' in page
    assert re.findall(r'data-source="([^"]+)"', page) == ["sample_grid.png", "curve.png"]
    images = read_report_images(out)
    assert len(images) == 2 and all(alt for alt, _ in images)
    for _, data in images:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG"
    assert not list(out.parent.glob(".*.tmp*"))


def test_html_report_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "r.html", "t", [Section("a", images=[tmp_path / "missing.png"])])
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a PNG"):
        write_report(tmp_path / "r.html", "t", [Section("a", images=[fake])])
    with pytest.raises(InputError, match="table"):
        write_report(tmp_path / "r.html", "t", [Section("a", table=[1, 2])])
    with pytest.raises(InputError, match="Section"):
        write_report(tmp_path / "r.html", "t", [{"title": "a"}])
    assert not (tmp_path / "r.html").exists()


# ----------------------------------------------------------------------------- grids of cells on one axes
@pytest.fixture
def drawn(monkeypatch):
    """The Figures the figure functions would save, drawn on an Agg canvas instead of written."""
    figs = []

    def keep(fig, path, tight=True):
        FigureCanvasAgg(fig).draw()
        figs.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def texts_of(fig):
    """[(text, colour)] of the figure's non-empty texts, each checked to lie inside the page."""
    renderer, page, out = fig.canvas.get_renderer(), fig.bbox, []
    for t in fig.findobj(Text):
        if t.get_text() and t.get_visible():
            box = t.get_window_extent(renderer)
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, f"{t.get_text()!r} sticks out sideways"
            assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, f"{t.get_text()!r} sticks out"
            out.append((t.get_text(), to_hex(t.get_color())))
    return out


def test_fit_scales_by_whole_pixels_and_centres():
    img = np.arange(4, dtype=np.float32).reshape(2, 2, 1).repeat(3, axis=2)  # [[0, 1], [2, 3]]
    assert figures._fit(img, 2, 2) is img
    assert figures._fit(img, 4, 4)[..., 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    wide = figures._fit(img, 2, 4)[..., 0]  # scale 1 (the height limits it), centred in white
    assert wide.tolist() == [[1, 0, 1, 1], [1, 2, 3, 1]]


def test_captioned_images_draw_sixteen_cells_on_one_axes(drawn):
    caps = [f"caption {i}" for i in range(15)] + ["a long caption that goes on and on " * 4]
    captioned_images(torch.rand(16, 3, 12, 12), caps, "unused.png", true_captions=[f"truth {i}" for i in range(16)])
    (fig,) = drawn
    (ax,) = fig.axes
    assert len(ax.images) == 1
    texts = texts_of(fig)
    assert ("caption 3", "#000000") in texts and ("true: truth 3", "#777777") in texts
    assert len(texts) == 32
    long = next(t for t, _ in texts if t.startswith("a long"))
    assert len(long.split("\n")) == 5 and long.endswith("…")


def test_captioned_images_page_is_sized_from_the_cells(tmp_path):
    red, blue = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    pair = torch.cat([red, blue])

    def centres(ncol):
        pixels = np.asarray(Image.open(captioned_images(pair, ["red", "blue"], tmp_path / "p.png", ncol=ncol))
                            .convert("RGB")).astype(int)
        found = []
        for c in (0, 2):  # the red then the blue tile
            others = [k for k in range(3) if k != c]
            ys, xs = np.nonzero((pixels[..., c] > 200) & (pixels[..., others] < 60).all(-1))
            found.append((ys.mean(), xs.mean(), len(ys)))
        return pixels.shape[:2], found

    # 16 px tiles over 1.6 inches: 10 canvas px per inch, 1 px gaps, a 2 px text strip; 100 dpi
    (height, width), ((ry, rx, n), (by, bx, _)) = centres(2)
    assert (height, width) == (200, 350)  # (1 + 16 + 2 + 1) x (2 * 17 + 1) canvas px, not cropped
    assert n > 0.8 * 160 * 160 and abs(ry - by) < 1 and bx - rx == pytest.approx(170, abs=1)
    (height, width), ((ry, rx, _), (by, bx, _)) = centres(1)
    assert (height, width) == (390, 180) and abs(rx - bx) < 1 and by - ry == pytest.approx(190, abs=1)


def test_retrieval_examples_boxes_texts_and_scores(drawn):
    scores = np.array([[0.5, 0.25, 0.125], [0.9, 0.8, 0.7]])
    retrieval_examples(["a red circle", "a blue square"], torch.rand(2, 3, 3, 16, 16), scores, "u.png",
                       title="text to image")
    retrieval_examples(torch.rand(2, 3, 8, 8), [["x", "y", "z"], ["u", "v", "w"]], scores, "u.png")
    for fig in drawn:
        assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    (boxes,) = drawn[0].axes[0].collections
    assert len(boxes.get_paths()) == 2  # the two text queries
    texts = texts_of(drawn[0])
    assert [t for t, c in texts if c == to_hex("#1f5fa8")] == ["query", "query"]
    assert {"a red circle", "a blue square", "text to image", "#3  score 0.125", "#1  score 0.9"} <= {t for t, _ in texts}
    assert len(drawn[1].axes[0].collections[0].get_paths()) == 6  # six text results
    assert {"x", "w", "#2  score 0.25"} <= {t for t, _ in texts_of(drawn[1])}


def test_retrieval_examples_mixed_image_sizes(tmp_path):
    queries = torch.zeros(1, 3, 8, 8)
    queries[:, 1] = 1.0  # green, scaled up to the 16 x 16 results' tiles
    pixels = np.asarray(Image.open(retrieval_examples(queries, torch.zeros(1, 2, 3, 16, 16), [[0.5, 0.4]],
                                                      tmp_path / "r.png")).convert("RGB")).astype(int)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    black = (pixels < 30).all(-1)
    assert green.sum() == pytest.approx(black.sum() / 2, rel=0.1)  # one tile of green, two of black


def test_text_to_image_grid_titles_each_row(drawn):
    prompts = ["first prompt", "second prompt", "third prompt"]
    text_to_image_grid(prompts, torch.rand(3, 4, 3, 16, 16), "u.png")
    (fig,) = drawn
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    renderer = fig.canvas.get_renderer()
    titles = {t.get_text(): t.get_window_extent(renderer).y0 for t in fig.findobj(Text) if t.get_text()}
    assert [t for t, _ in texts_of(fig)] == prompts
    assert titles["first prompt"] > titles["second prompt"] > titles["third prompt"]  # top to bottom


def test_anomaly_examples_rank_by_score(drawn):
    scores = np.array([0.5, 3.0, 2.0])
    anomaly_examples(torch.rand(3, 3, 8, 8), ["low", "top", "middle"], scores, "u.png", k=2)
    anomaly_examples(None, ["low", "top", "middle"], scores, "u.png", ncol=2)
    texts = texts_of(drawn[0])
    assert [t for t, c in texts if c == to_hex("#b22")] == ["#1  score 3", "#2  score 2"]
    assert [t for t, c in texts if c == "#000000"] == ["top", "middle"]
    assert len(drawn[1].axes) == 1 and len(drawn[1].axes[0].collections[0].get_paths()) == 3
    assert [t for t, _ in texts_of(drawn[1]) if "score" not in t] == ["top", "middle", "low"]
