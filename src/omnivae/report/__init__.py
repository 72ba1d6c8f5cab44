"""Report building blocks: PNG figures from tensors/arrays/strings and a self-contained HTML page."""

from omnivae.report.figures import (
    anomaly_examples,
    captioned_images,
    image_grid,
    latent_map,
    read_metrics,
    retrieval_examples,
    scalar_curve,
    text_to_image_grid,
    training_curves,
)
from omnivae.report.html import Section, flatten_metrics, read_report_images, write_report

__all__ = [
    "Section",
    "anomaly_examples",
    "captioned_images",
    "flatten_metrics",
    "image_grid",
    "latent_map",
    "read_metrics",
    "read_report_images",
    "retrieval_examples",
    "scalar_curve",
    "text_to_image_grid",
    "training_curves",
    "write_report",
]
