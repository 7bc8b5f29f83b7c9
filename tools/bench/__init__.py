"""`make bench`: the service's throughput, CPU and latency, measured against its own ceiling.

Not part of the production package (`app/`): it runs from a checkout, next to the tests
whose event factory it uses. See docs/bench.md for what it measures and how.
"""
