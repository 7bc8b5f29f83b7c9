"""Use cases: each runs in one transaction the caller (an entrypoint) opens and commits."""
