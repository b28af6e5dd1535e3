"""The idle served-entity advisory: entities an endpoint keeps provisioned (and billed) for no traffic.

Every redeploy of an agent adds a served entity to its endpoint and moves
the traffic to it; the old entities keep 0% of the traffic but stay
provisioned unless scale-to-zero is on. For each ``idle_served_entity``
rule (``alerts.advisories``), once per ``window``:

1. the requests and quarantine tables give the last request per endpoint
   and ``served_entity_id`` (matched against the served entity's ``name``);
2. each endpoint's configuration comes from the Serving Endpoints API
   (``GET /api/2.0/serving-endpoints/{name}`` through databricks-sdk
   ``WorkspaceClient().serving_endpoints.get``), at most once per endpoint
   per window;
3. an entity is idle when ``config.served_entities`` lists it without
   ``scale_to_zero_enabled``, with provisioned compute (not an external or
   foundation model, billed per token), ``traffic_config.routes`` give it
   0% (or do not name it), and no request for it arrived in the window.

An idle entity fires one alert (dedup key per rule, endpoint and entity),
delivered like every alert through the outbox and the sinks; it resolves
when the entity is gone from the configuration (or the endpoint is gone) or
gets traffic again. Without Databricks credentials the advisory is off and
says so once. The engine calls ``Advisor.tick`` on its delivery tick;
``gatewatch advise`` calls ``Advisor.idle`` once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from gatewatch.alerts import decide as D
from gatewatch.alerts.outbox import OutboxEntry
from gatewatch.alerts.rules import IdleEntityRule
from gatewatch.alerts.sinks.model import Alert, iso, make_dedup_key
from gatewatch.alerts.windows import from_micros
from gatewatch.schemas import ALERT_OUTBOX
from gatewatch.settings import Settings
from gatewatch.streams import outputs as out
from gatewatch.streams.batch import utc_now
from gatewatch.streams.logs import error_summary

log = structlog.get_logger("gatewatch.advise")

APP_ID = "gatewatch-advise"
"""The outbox appends of the advisory: their own app id, the tick's time in milliseconds as the version."""

Clock = Callable[[], datetime]
Lookup = Callable[[str], "Mapping[str, Any] | None"]
"""An endpoint's configuration as the REST API's JSON, ``None`` when the endpoint does not exist."""


@dataclass(frozen=True)
class ServedEntity:
    """One served entity of an endpoint's configuration, as far as the advisory needs it."""

    name: str
    entity_name: str | None
    entity_version: str | None
    traffic_percentage: int | None
    """Its share of the traffic routes; ``None`` when the endpoint has no traffic config."""
    scale_to_zero: bool
    per_token: bool
    """An external or foundation model: billed per token, nothing provisioned."""


def served_entities(endpoint: Mapping[str, Any]) -> list[ServedEntity]:
    """The served entities of a ``GET /api/2.0/serving-endpoints/{name}`` answer (its JSON), with their traffic."""
    config = endpoint.get("config") or {}
    routes = (config.get("traffic_config") or {}).get("routes")
    share: dict[str, int] = {}
    for route in routes or ():
        name = route.get("served_entity_name") or route.get("served_model_name")
        if name:
            share[name] = share.get(name, 0) + int(route.get("traffic_percentage") or 0)
    found = []
    for e in config.get("served_entities") or config.get("served_models") or ():
        name = e.get("name") or e.get("entity_name")
        if not name:
            continue
        found.append(ServedEntity(
            name=name, entity_name=e.get("entity_name") or e.get("model_name"),
            entity_version=e.get("entity_version") or e.get("model_version"),
            traffic_percentage=None if routes is None else share.get(name, 0),
            scale_to_zero=bool(e.get("scale_to_zero_enabled")),
            per_token=bool(e.get("external_model") or e.get("foundation_model")),
        ))
    return found


@dataclass(frozen=True)
class IdleEntity:
    """A served entity found idle: where, what, and its last request (``None``: none in the tables)."""

    rule: str
    endpoint: str
    entity: str
    entity_name: str | None
    entity_version: str | None
    last_request: datetime | None
    window: str

    @property
    def key(self) -> str:
        """The dedup key of its alert."""
        return make_dedup_key(self.rule, {"endpoint": self.endpoint, "served_entity": self.entity})

    @property
    def last_request_text(self) -> str:
        """The last request as RFC 3339 UTC text, or ``none in the tables``."""
        return iso(self.last_request) if self.last_request is not None else "none in the tables"

    @property
    def removal(self) -> str:
        """The UI step that removes it (``update_command`` is the command line's)."""
        return f"Serving > {self.endpoint} > Edit endpoint > remove {self.entity} > Update"

    @property
    def update_command(self) -> str:
        """The command that removes it: the endpoint's config without it (and without its route)."""
        return (f"databricks serving-endpoints update-config {self.endpoint} --json @config.json "
                f"(config.json: the current config without {self.entity} in served_entities and routes)")


def idle_entities(rule: IdleEntityRule, endpoint: str, config: Sequence[ServedEntity],
                  last: Mapping[str, datetime], now: datetime) -> list[IdleEntity]:
    """The entities of one endpoint's configuration that are idle at ``now`` (see the module docstring)."""
    since = now - timedelta(seconds=rule.window_s)
    return [
        IdleEntity(rule.name, endpoint, e.name, e.entity_name, e.entity_version, last.get(e.name), rule.window)
        for e in config
        if e.traffic_percentage == 0 and not e.scale_to_zero and not e.per_token
        and (last.get(e.name) is None or last[e.name] < since)
    ]


def fire(rule: IdleEntityRule, idle: IdleEntity, now: datetime) -> Alert:
    """The firing alert of one idle entity."""
    name = idle.entity + (f" ({idle.entity_name} v{idle.entity_version})" if idle.entity_name else "")
    summary = (f"{rule.name} [endpoint={idle.endpoint}, served_entity={idle.entity}]: {name} has 0% of the traffic, "
               f"no scale-to-zero and no request in {rule.window} (last request: {idle.last_request_text}); "
               f"still provisioned and billed. Remove it: {idle.removal}")
    details = {"window": rule.window, "last_request": None if idle.last_request is None else iso(idle.last_request),
               "entity_name": idle.entity_name, "entity_version": idle.entity_version, "removal": idle.removal[:256]}
    return Alert(
        rule=rule.name, group={"endpoint": idle.endpoint, "served_entity": idle.entity}, status="firing",
        severity=rule.severity, summary=summary, value=0, threshold=0,
        window_start=now - timedelta(seconds=rule.window_s), window_end=now, started_at=now,
        counts={"requests_in_window": 0, "traffic_percentage": 0},
        links=tuple((link.text, link.url) for link in rule.links),
        details={k: v for k, v in details.items() if v is not None},
    )


def decide(rule: IdleEntityRule, found: Sequence[IdleEntity], checked: Mapping[str, set[str]],
           firing: Mapping[str, Alert], now: datetime) -> list[Alert]:
    """Fires for idle entities not firing yet; resolves firing ones no longer idle.

    ``checked`` holds, per endpoint whose configuration was read, the names
    of its served entities; the alerts of other endpoints stay as they are.
    """
    idle = {i.key: i for i in found}
    out = [fire(rule, idle[k], now) for k in sorted(idle) if k not in firing]
    for key in sorted(firing):
        alert = firing[key]
        endpoint, entity = alert.group.get("endpoint", ""), alert.group.get("served_entity", "")
        if alert.rule == rule.name and key not in idle and endpoint in checked:
            why = ("gets traffic again (or scales to zero)" if entity in checked[endpoint]
                   else "is gone from the endpoint's configuration")
            out.append(alert.resolve(now, summary=f"{rule.name} [{alert.group_text()}] resolved: {entity} {why}"))
    return out


def last_requests(frames: Sequence[DataFrame]) -> dict[tuple[str, str], datetime]:
    """The last ``request_time`` per (``endpoint``, ``served_entity_id``) over the frames (requests, quarantine)."""
    union = None
    for df in frames:
        part = df.select("endpoint", "served_entity_id", "request_time")
        union = part if union is None else union.unionByName(part)
    if union is None:
        return {}
    rows = (union.where(F.col("endpoint").isNotNull() & F.col("served_entity_id").isNotNull())
            .groupBy("endpoint", "served_entity_id").agg(F.max(F.unix_micros("request_time")).alias("last"))
            .collect())
    return {(r["endpoint"], r["served_entity_id"]): from_micros(r["last"]) for r in rows if r["last"] is not None}


def sdk_lookup(client: Any) -> Lookup:
    """An endpoint lookup through databricks-sdk: ``serving_endpoints.get(name).as_dict()``, ``None`` when not found."""
    from databricks.sdk.errors import NotFound

    def lookup(name: str) -> Mapping[str, Any] | None:
        try:
            return client.serving_endpoints.get(name).as_dict()
        except NotFound:
            return None

    return lookup


def default_lookup() -> Lookup:
    """A lookup with the default Databricks credentials (environment or profile); raises when there are none.

    Without any ``DATABRICKS_*`` (or Azure ``ARM_*``) variable and without a
    config file, databricks-sdk finds no workspace to talk to: that is said
    without importing it (its import alone took 2 s of the job's CPU).
    """
    if not could_authenticate():
        raise ValueError("no Databricks workspace: no DATABRICKS_* variable, no config file "
                         f"({os.environ.get('DATABRICKS_CONFIG_FILE') or '~/.databrickscfg'})")
    from databricks.sdk import WorkspaceClient

    return sdk_lookup(WorkspaceClient())


def could_authenticate() -> bool:
    """Whether databricks-sdk's default credentials may find a workspace: a variable or a config file names one."""
    if any(name.startswith(("DATABRICKS_", "ARM_")) for name in os.environ):
        return True
    return Path(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser().is_file()


class Advisor:
    """The advisory rules of a job: evaluated on the engine's delivery tick, once per window each.

    Args:
        settings: the advisory rules (``alerts.advisories``) and the sinks.
        tables: the job's tables by role (``requests``, ``quarantine``, ``outbox``).
        lookup: reads an endpoint's configuration (default: databricks-sdk
            with the default credentials, built at the first evaluation).
        clock: the wall clock (the window ends now).
    """

    def __init__(self, settings: Settings, tables: Mapping[str, out.Table], *, lookup: Lookup | None = None,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.rules = {r.name: r for r in settings.alerts.advisories}
        self.tables = tables
        self.lookup = lookup
        self.clock = clock
        self.off = not self.rules
        self.next_due: dict[str, datetime] = {}
        self.configs: dict[str, tuple[datetime, Mapping[str, Any] | None]] = {}

    def owns(self, alert: Alert) -> bool:
        """True for an alert of an advisory rule (the engine leaves those alone)."""
        return alert.rule in self.rules

    def _lookup(self) -> Lookup | None:
        if self.lookup is None and not self.off:
            try:
                self.lookup = default_lookup()
            except Exception as err:  # noqa: BLE001 - any failure to authenticate turns the advisory off
                self.off = True
                log.warning("advisory_off", rules=sorted(self.rules), reason=error_summary(err),
                            hint="set DATABRICKS_HOST and DATABRICKS_TOKEN (or a profile) to check served entities")
        return None if self.off else self.lookup

    def _config(self, endpoint: str, now: datetime, window_s: int) -> Mapping[str, Any] | None:
        """The endpoint's configuration, looked up at most once per window; raises when the lookup fails."""
        cached = self.configs.get(endpoint)
        if cached is not None and now - cached[0] < timedelta(seconds=window_s):
            return cached[1]
        lookup = self._lookup()
        assert lookup is not None
        config = lookup(endpoint)
        self.configs[endpoint] = (now, config)
        return config

    def idle(self, spark: SparkSession, rule: IdleEntityRule,
             now: datetime) -> tuple[list[IdleEntity], dict[str, set[str]]]:
        """The idle entities of one rule at ``now``, and the served entities of each endpoint that could be checked."""
        if self._lookup() is None:
            return [], {}
        frames = [self.tables[r].read(spark) for r in ("requests", "quarantine") if r in self.tables]
        last = last_requests(frames)
        endpoints = list(rule.endpoints) or sorted({e for e, _ in last})
        found: list[IdleEntity] = []
        checked: dict[str, set[str]] = {}
        for endpoint in endpoints:
            try:
                config = self._config(endpoint, now, rule.window_s)
            except Exception as err:  # noqa: BLE001 - one endpoint's failure leaves its alerts as they are
                log.warning("advisory_lookup_failed", endpoint=endpoint, error=error_summary(err))
                continue
            entities = served_entities(config) if config is not None else []
            checked[endpoint] = {e.name for e in entities}
            mine = {s: t for (e, s), t in last.items() if e == endpoint}
            found += idle_entities(rule, endpoint, entities, mine, now)
        return found, checked

    def evaluate(self, spark: SparkSession, firing: Mapping[str, Alert], now: datetime | None = None) -> list[Alert]:
        """The transitions of every advisory rule that is due at ``now`` (once per window each)."""
        now = now or self.clock()
        transitions: list[Alert] = []
        for name, rule in self.rules.items():
            if now < self.next_due.get(name, now):
                continue
            found, checked = self.idle(spark, rule, now)
            if self.off:
                return []
            self.next_due[name] = now + timedelta(seconds=rule.window_s)
            transitions += decide(rule, found, checked, {k: a for k, a in firing.items() if a.rule == name}, now)
        return transitions

    def tick(self, alerting: Any, spark: SparkSession) -> list[Alert]:
        """Evaluate what is due and hand the transitions to the alerting's outbox and sinks (the engine's tick)."""
        if self.off:
            return []
        now = self.clock()
        with alerting.lock:
            firing = {k: a for k, a in alerting.firing.items() if self.owns(a)}
        transitions = self.evaluate(spark, firing, now)
        if transitions:
            self.record(alerting, spark, transitions, now)
        return transitions

    def record(self, alerting: Any, spark: SparkSession, transitions: Sequence[Alert], now: datetime) -> None:
        """Append the transitions to the outbox (one row per sink), send them in order, then queue the state."""
        entries = [OutboxEntry(D.event_id(a), sink, a.dedup_key, a.rule, a.status, a.to_json(), now)
                   for a in transitions for sink in self.targets(a.rule, alerting.delta_sinks)]
        with alerting.lock:
            for alert in transitions:
                alerting.firing.pop(alert.dedup_key, None)
                if alert.firing:
                    alerting.firing[alert.dedup_key] = alert
                else:
                    alerting.courier.forget(alert.dedup_key)
            alerting.courier.pending = None  # batches queue behind these entries until the pass below
        if entries:
            out.append(out.local_rows(spark, [e.row() for e in entries], ALERT_OUTBOX), self.tables["outbox"],
                       APP_ID, int(now.timestamp() * 1000))
        alerting.deliver(spark, safe=True)
        alerting.state.put(list(transitions), now)
        log.info("advisory", fired=sum(a.firing for a in transitions), resolved=sum(not a.firing for a in transitions))

    def targets(self, rule_name: str, delta_sinks: set[str]) -> list[str]:
        """The sinks (other than ``delta``) of an advisory rule: its own list, or every configured sink."""
        rule = self.rules[rule_name]
        names = list(rule.sinks) or [s.name for s in self.settings.sinks]
        return [n for n in names if n not in delta_sinks]
