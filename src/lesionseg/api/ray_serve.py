"""The same FastAPI app, replicated by Ray Serve: `serve run deploy/ray-serve.yaml` (`make serve-ray`).

Each replica builds the app with `create_app`, so it loads and warms the model once, reads the same
LESIONSEG_* settings and answers every route with the same contracts as `lesionseg serve`. Replica
counts, autoscaling and CPUs per replica live in deploy/ray-serve.yaml, not here.
"""

from ray import serve

from lesionseg.api.app import create_app


@serve.deployment(name="lesionseg")
@serve.ingress(create_app)  # a builder: the app, and its model, are made inside each replica
class LesionSegmentation:
    pass


application = LesionSegmentation.bind()
