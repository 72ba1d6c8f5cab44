"""The `omnivae` command line. Each module registers its verbs on the shared app."""
from importlib import import_module

from omnivae.cli.app import app

for _module in ("run", "tasks", "data", "models", "bench", "serve", "hub", "latent"):
    try:
        import_module(f"omnivae.cli.{_module}")
    except ModuleNotFoundError as exc:  # a verb group not present in this build
        if exc.name != f"omnivae.cli.{_module}":
            raise

__all__ = ["app"]
