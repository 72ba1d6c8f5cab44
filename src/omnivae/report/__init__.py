"""Report building blocks: PNG figures from tensors/arrays/strings, report sections built from a
run folder, and a self-contained HTML page."""

from omnivae.report.curves import curves_figure, loss_scale, read_metrics, scalar_curve, training_curves
from omnivae.report.figures import (
    anomaly_examples,
    captioned_images,
    image_grid,
    retrieval_examples,
    text_to_image_grid,
)
from omnivae.report.html import Section, flatten_metrics, read_report_images, write_report
from omnivae.report.latent import latent_figure, latent_map
from omnivae.report.overfit import overfitting, overfitting_curves, overfitting_figure
from omnivae.report.sections import FRECHET_TEXT, curve_sections, latent_section, run_sections

__all__ = [
    "FRECHET_TEXT",
    "Section",
    "anomaly_examples",
    "captioned_images",
    "curve_sections",
    "curves_figure",
    "flatten_metrics",
    "image_grid",
    "latent_figure",
    "latent_map",
    "latent_section",
    "loss_scale",
    "overfitting",
    "overfitting_curves",
    "overfitting_figure",
    "read_metrics",
    "read_report_images",
    "retrieval_examples",
    "run_sections",
    "scalar_curve",
    "text_to_image_grid",
    "training_curves",
    "write_report",
]
