"""Alerting: rules, event-time windows, decisions, alert state, outbox and delivery, sinks.

Module map:

- ``rules``: the alert rule model (``AlertRule`` and its conditions) and its validation.
- ``windows``: pure DataFrame transforms that count rows per rule, group and event-time window.
- ``decide``: pure decisions (fire, hold, resolve) from counts and the previous state.
- ``state``: the ``alerts`` table (one row per alert) and its background MERGE.
- ``outbox``: the outbox table and the ``Courier`` that delivers what is pending.
- ``engine``: ``Alerting``, the batch stage that counts, decides and sends.
- ``sinks``: one module per sink (PagerDuty, Alertmanager, Slack, webhook, console).

Alerting depends on the batch's small interfaces (``streams.batch``,
``streams.outputs``), never on the job that assembles it.
"""
