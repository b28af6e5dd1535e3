"""Synthetic inference traffic for the demo, the benchmarks and the tests.

- ``shapes``: the request/response templates of every documented shape, and malformed ones.
- ``generate``: rows drawn from the scenarios, written as real change-feed inserts.
"""
