"""The admin HTTP API: the application (`app`) and its handlers, one module per resource."""

from .app import METRICS, PREFIX, ROUTES, create_admin_app, run_admin_api

__all__ = ["METRICS", "PREFIX", "ROUTES", "create_admin_app", "run_admin_api"]
