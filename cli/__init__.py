"""The command line: ``gatewatch run | demo | replay | status | alerts | deploy | setup``.

Module map:

- ``main``: argument parsing and the one-line error for a user's mistake.
- ``deploy``: the Databricks job settings and their create-or-reset.
- ``demo``: ``make demo``: generated traffic through the real job, and its summary.
- ``tables``: plain-text tables for the terminal.
"""
