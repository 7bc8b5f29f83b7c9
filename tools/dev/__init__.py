"""`make run` (`python -m tools.dev`): the service on embedded defaults, for a developer's
machine and the tests. Not part of the image: nothing in app/ imports it.

- embedded.py: the embedded broker (Tansu) and PostgreSQL, and `free_port`;
- pg_watchdog.py: stops the embedded PostgreSQL when the `make run` that started it is gone;
- banner.py: what `make run` prints before the service starts.
"""
