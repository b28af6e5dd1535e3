"""Output tables for the views' tests: the real job run once on generated traffic, with alerts on."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from gatewatch.settings import AlertSettings, OutputSettings, Settings, SourceSettings, TriggerSettings
from gatewatch.traffic import generate as traffic

def build_outputs(spark, root: Path) -> Settings:
    """Two endpoints' traffic (AI Gateway and legacy tables), a content-filter spike on chat-prod, then the job.

    The job runs with ``available_now`` and the packaged alert rules.

    Returns the job's settings: the outputs are under ``root / "output"``.
    """
    from gatewatch.alerts.sinks import ConsoleSink
    from gatewatch.alerts.sinks.config import ConsoleSinkSettings
    from gatewatch.streams.config import read_rules
    from gatewatch.streams.job import Job

    chat, agent = root / "inference" / "chat", root / "inference" / "agent"
    traffic.create_inference_table(spark, str(chat))
    traffic.create_inference_table(spark, str(agent), kind="legacy")
    traffic.write_rows(spark, str(chat), [g.row for g in traffic.generate(500, seed=18, endpoints=("chat-prod",))])
    traffic.write_rows(spark, str(agent), traffic.to_legacy(traffic.generate(300, seed=28, endpoints=("agent-prod",))),
                       kind="legacy")
    spike = traffic.spike(80, endpoint="chat-prod", seed=19, start=traffic.DEFAULT_START + timedelta(minutes=10))
    traffic.write_rows(spark, str(chat), [g.row for g in spike])
    settings = Settings(
        alerts=AlertSettings(rules=read_rules(), deliver_interval_s=0),
        sinks=({"name": "console", "type": "console"},),
        sources=(SourceSettings(table=str(chat), endpoint="chat-prod", max_files_per_trigger=1),
                 SourceSettings(table=str(agent), endpoint="agent-prod")),
        output=OutputSettings(location=str(root / "output")),
        checkpoint_root=str(root / "checkpoints"),
        trigger=TriggerSettings(mode="available_now"),
    )
    sink = ConsoleSink(ConsoleSinkSettings(name="console"), stream=io.StringIO())
    Job(spark, settings, sinks=[sink]).start().wait()
    return settings
