"""Model families by name; `register_model` adds one (configs name it in their 'model' key)."""
from __future__ import annotations

MODELS: dict[str, type] = {}


def register_model(name: str, cls: type) -> type:
    MODELS[name] = cls
    return cls
