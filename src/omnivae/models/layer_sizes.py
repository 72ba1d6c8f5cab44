"""The code size of a model configured by a list of layer sizes whose last is latent_dim
(stacked_ae, ladder_vae)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def code_size_from_layers(data: Any, default_layers: Callable[[int], list[int]]) -> Any:
    """A config's raw input with either size filled in from the other when only one is given:
    layers [..., 8] sets latent_dim 8, latent_dim n sets layers default_layers(n). Input that
    gives both (the config checks that they agree) or neither usably is returned unchanged."""
    if not isinstance(data, dict):
        return data
    layers, latent = data.get("layers"), data.get("latent_dim")
    if "latent_dim" not in data and isinstance(layers, list) and layers and isinstance(layers[-1], int):
        data = {**data, "latent_dim": layers[-1]}
    elif "layers" not in data and isinstance(latent, int) and not isinstance(latent, bool) and latent >= 1:
        data = {**data, "layers": default_layers(latent)}
    return data
