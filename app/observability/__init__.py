"""Logs, traces and their shared context: what operators see of the running service."""
