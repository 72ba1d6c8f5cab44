"""`omnivae serve`: a web page and a JSON API over a saved model (needs `pip install 'omnivae[serve]'`).

    from omnivae.serve import create_app, Limits
    app = create_app("runs/demo/model", index="runs/demo", limits=Limits(max_n=16))
"""
from omnivae.serve.app import create_app
from omnivae.serve.limits import Limits

__all__ = ["Limits", "create_app"]
