"""The HTTP entrypoint: routers per resource (routes/), their dependencies (deps), models
(models), input types (inputs), error answers (errors), and the limits
(server: connections and header deadline; guard: body size and deadline, errors)."""

from app.entrypoints.http.app import create_app
from app.entrypoints.http.runtime import Runtime

__all__ = ["Runtime", "create_app"]
