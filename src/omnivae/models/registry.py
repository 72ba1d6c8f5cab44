"""Model families by name; `register_model` adds one (configs name it in their 'model' key)."""
from __future__ import annotations


class Registry(dict):
    """Names to classes; a non-string name (a list or dict from a damaged config) is simply not in it,
    so lookups fail as 'unknown model' instead of a TypeError (unhashable)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name)


MODELS: dict[str, type] = Registry()


def register_model(name: str, cls: type) -> type:
    MODELS[name] = cls
    return cls
