"""``gatewatch deploy``: the Databricks job that runs gatewatch from its wheel, created or updated by name.

One job runs every configured source (the job starts one query per source).
A ``processing_time`` trigger makes a continuous job on a job cluster; an
``available_now`` trigger makes a job that drains what is there and exits,
run on ``deploy.schedule`` or when started (``jobs run-now``, another
orchestrator) if there is no schedule. Serverless compute runs only the
latter.

The job settings are built from ``Settings`` alone (no workspace needed, so
``--dry-run`` prints them anywhere); ``deploy`` then looks the job up by its
exact name and creates it, or overwrites the one job of that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import structlog
from databricks.sdk.service import compute, jobs

from gatewatch import __version__
from gatewatch.errors import ConfigError, DatabricksAuthError, DeployError, DuplicateJobsError
from gatewatch.settings import DeploySettings, Settings

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

log = structlog.get_logger("gatewatch.deploy")

ENTRY_POINT = "gatewatch-job"
"""The wheel's entry point the task calls: ``gatewatch``'s CLI, raising on a non-zero exit code."""

TASK_KEY = "gatewatch"
"""The key of the job's one task, of its job cluster and of its serverless environment."""

DURABLE_PREFIXES = ("/Volumes/", "/dbfs/", "dbfs:/", "s3://", "s3a://", "abfss://", "gs://")
"""Locations that outlive a job cluster (a relative folder lives on the driver's disk)."""

_CATALOG_SCHEMA = re.compile(r"^[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*$")
_CATALOG_TABLE = re.compile(r"^[A-Za-z_`][\w`-]*\.[A-Za-z_`][\w`-]*\.[A-Za-z_`][\w`-]*$")


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy`` did: ``created``, ``updated`` or (dry run) ``planned``, with the job's id and settings."""

    action: Literal["created", "updated", "planned"]
    name: str
    job_id: int | None
    settings: dict[str, Any]


def job_name(deploy: DeploySettings) -> str:
    """``deploy.name``, else ``gatewatch-<config file name>`` (just ``gatewatch`` for ``gatewatch.yaml``)."""
    if deploy.name:
        return deploy.name
    stem = PurePosixPath(deploy.config_path or "gatewatch").stem
    return "gatewatch" if stem == "gatewatch" else f"gatewatch-{stem}"


def check_deployable(settings: Settings) -> None:
    """Refuse, naming the key, a config the job could not run as it is meant to.

    Reads the sources, output, checkpoint root, trigger and ``deploy`` section.

    Raises:
        ConfigError: a key the job needs is missing, or two keys contradict each other.
    """
    _check_locations(settings)
    _check_job(settings)
    if settings.deploy.compute == "serverless":
        _check_serverless(settings)


SERVERLESS_CONF = frozenset({
    "spark.sql.session.timeZone", "spark.sql.shuffle.partitions", "spark.sql.ansi.enabled",
    "spark.sql.legacy.timeParserPolicy", "spark.sql.files.maxPartitionBytes", "spark.databricks.execution.timeout",
})
"""The Spark properties a serverless notebook or job may set (Databricks, "Set Spark configuration properties")."""


def _check_serverless(settings: Settings) -> None:
    """What serverless compute refuses: cluster Spark confs, other session confs, DBFS locations.

    Serverless runs Python through Spark Connect with Unity Catalog: a
    session sets only ``SERVERLESS_CONF`` (gatewatch sets ``spark.conf``
    on the job's session), and DBFS is not for its data or checkpoints.
    """
    if settings.deploy.cluster.spark_conf:
        raise ConfigError("deploy.cluster.spark_conf", "no cluster Spark confs with serverless compute (there is "
                          "no cluster); session settings go in spark.conf",
                          ", ".join(sorted(settings.deploy.cluster.spark_conf)))
    for key in sorted(settings.spark.conf):
        if key not in SERVERLESS_CONF:
            raise ConfigError(f"spark.conf.{key}", "one of the Spark properties serverless lets a job set: "
                              + ", ".join(sorted(SERVERLESS_CONF)))
    for key, where in (("checkpoint_root", settings.checkpoint_root), ("output.location", settings.output.location),
                       *((f"sources.{i}.table", s.table) for i, s in enumerate(settings.sources))):
        if where.startswith(("dbfs:", "/dbfs/")):
            raise ConfigError(key, "a Unity Catalog volume (/Volumes/...) or catalog table: serverless compute "
                              "has no general DBFS access", where)


def _check_locations(settings: Settings) -> None:
    """Sources, output and checkpoints the workspace can reach, and that outlive a job cluster."""
    if not settings.sources:
        raise ConfigError("sources", "at least one source table for the job to tail")
    for i, source in enumerate(settings.sources):
        if not (_CATALOG_TABLE.match(source.table) or source.table.startswith(DURABLE_PREFIXES)):
            raise ConfigError(f"sources.{i}.table", "a catalog table (catalog.schema.table) or a path the "
                              "workspace can read (/Volumes/..., s3://...)", source.table)
    if not (_CATALOG_SCHEMA.match(settings.output.location) or settings.output.location.startswith(DURABLE_PREFIXES)):
        raise ConfigError("output.location", "a catalog.schema, or a path the workspace can read (/Volumes/..., "
                          "s3://...)", settings.output.location)
    if not settings.checkpoint_root.startswith(DURABLE_PREFIXES):
        raise ConfigError("checkpoint_root", "a location that outlives the job cluster (/Volumes/<catalog>/<schema>/"
                          "<volume>/..., or a cloud URI): a relative folder is lost when the cluster stops",
                          settings.checkpoint_root)


def _check_job(settings: Settings) -> None:
    """The deploy keys the job needs, consistent with the trigger mode."""
    deploy = settings.deploy
    if deploy.config_path is None:
        raise ConfigError("deploy.config_path", "the path where the job reads this config, e.g. "
                          "/Workspace/Shared/gatewatch/gatewatch.yaml (upload the file there)")
    if deploy.wheel is None:
        raise ConfigError("deploy.wheel", "the gatewatch wheel on the workspace, e.g. /Volumes/<catalog>/<schema>/"
                          f"<volume>/gatewatch-{__version__}-py3-none-any.whl (or --wheel)")
    if deploy.compute == "serverless" and not deploy.wheel.startswith(("/Workspace/", "/Volumes/")):
        raise ConfigError("deploy.wheel", "a wheel in /Volumes/... or /Workspace/... for serverless compute",
                          deploy.wheel)
    continuous = settings.trigger.mode == "processing_time"
    if deploy.compute == "serverless" and continuous:
        raise ConfigError("deploy.compute", "cluster with trigger.mode processing_time (serverless jobs run neither "
                          "continuously nor with a processing-time trigger; use trigger.mode available_now "
                          "with a schedule)", "serverless")
    if deploy.schedule is not None and continuous:
        raise ConfigError("deploy.schedule", "no schedule with trigger.mode processing_time (the job runs "
                          "continuously); set trigger.mode available_now to run on a schedule")
    cluster = deploy.cluster
    if deploy.compute == "cluster" and cluster.node_type_id is None and cluster.policy_id is None:
        raise ConfigError("deploy.cluster.node_type_id", "a node type of your cloud for the job cluster "
                          "(e.g. i3.xlarge, Standard_D4ds_v5, n2-standard-4), or a cluster policy_id that sets one")


def run_parameters(settings: Settings) -> list[str]:
    """The ``gatewatch`` arguments of the wheel task: ``run`` with the workspace config, in the deployed trigger mode.

    The trigger mode is passed explicitly so the job runs the mode its kind
    (continuous or not) was built for; ``deploy.run_args`` follow.
    """
    mode = ["--available-now"] if settings.trigger.mode == "available_now" else [
        "--set", "trigger.mode=processing_time"]
    return ["run", "--config", str(settings.deploy.config_path), "--log-format", "json", *mode,
            *settings.deploy.run_args]


def _cluster(deploy: DeploySettings) -> jobs.JobCluster:
    """The job cluster of ``deploy.cluster``; zero workers gives the single-node profile."""
    cfg = deploy.cluster
    spark_conf = dict(cfg.spark_conf)
    custom_tags = None
    if cfg.num_workers == 0:
        spark_conf = {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]", **spark_conf}
        custom_tags = {"ResourceClass": "SingleNode"}
    spec = compute.ClusterSpec(
        spark_version=cfg.spark_version,
        node_type_id=cfg.node_type_id,
        num_workers=cfg.num_workers,
        data_security_mode=compute.DataSecurityMode(cfg.data_security_mode),
        policy_id=cfg.policy_id,
        apply_policy_default_values=True if cfg.policy_id else None,
        spark_conf=spark_conf or None,
        custom_tags=custom_tags,
    )
    return jobs.JobCluster(job_cluster_key=TASK_KEY, new_cluster=spec)


def _task(settings: Settings) -> jobs.Task:
    """The one python-wheel task; retries only when the job is not continuous (a continuous job retries itself)."""
    deploy = settings.deploy
    wheel_task = jobs.PythonWheelTask(package_name="gatewatch", entry_point=ENTRY_POINT,
                                      parameters=run_parameters(settings))
    task = jobs.Task(task_key=TASK_KEY, description="gatewatch run: one streaming query per source",
                     python_wheel_task=wheel_task)
    if deploy.compute == "serverless":
        task.environment_key = TASK_KEY
    else:
        task.job_cluster_key = TASK_KEY
        task.libraries = [compute.Library(whl=deploy.wheel)]
    if settings.trigger.mode == "available_now":
        task.max_retries = deploy.retries.max_retries
        task.min_retry_interval_millis = deploy.retries.min_retry_interval_s * 1000
        task.retry_on_timeout = deploy.retries.retry_on_timeout
    return task


def _emails(deploy: DeploySettings) -> jobs.JobEmailNotifications | None:
    cfg = deploy.email_notifications
    if not (cfg.on_start or cfg.on_success or cfg.on_failure):
        return None
    return jobs.JobEmailNotifications(on_start=list(cfg.on_start) or None, on_success=list(cfg.on_success) or None,
                                      on_failure=list(cfg.on_failure) or None)


def _description(settings: Settings) -> str:
    tables = ", ".join(s.table for s in settings.sources)
    return f"gatewatch {__version__}: {tables} into {settings.output.location}"


def build_job(settings: Settings) -> jobs.JobSettings:
    """The Databricks job settings for ``settings``, after ``check_deployable``.

    Reads the sources and output (description), the trigger mode (continuous,
    scheduled or on demand) and the ``deploy`` section (name, wheel, compute,
    retries, tags, emails).

    Raises:
        ConfigError: see ``check_deployable``.
    """
    check_deployable(settings)
    deploy = settings.deploy
    pause = jobs.PauseStatus.PAUSED if deploy.paused else jobs.PauseStatus.UNPAUSED
    job = jobs.JobSettings(
        name=job_name(deploy),
        description=_description(settings),
        tasks=[_task(settings)],
        max_concurrent_runs=1,
        tags={"app": "gatewatch", **deploy.tags},
        email_notifications=_emails(deploy),
    )
    if deploy.compute == "serverless":
        env = compute.Environment(environment_version=deploy.serverless.environment_version,
                                  dependencies=[str(deploy.wheel), *deploy.serverless.dependencies])
        job.environments = [jobs.JobEnvironment(environment_key=TASK_KEY, spec=env)]
    else:
        job.job_clusters = [_cluster(deploy)]
    if settings.trigger.mode == "processing_time":
        job.continuous = jobs.Continuous(pause_status=pause, task_retry_mode=jobs.TaskRetryMode(deploy.task_retry_mode))
    elif deploy.schedule is not None:
        job.schedule = jobs.CronSchedule(quartz_cron_expression=deploy.schedule.cron,
                                         timezone_id=deploy.schedule.timezone, pause_status=pause)
    return job


def workspace_client() -> WorkspaceClient:
    """A ``WorkspaceClient`` authenticated the usual way (environment, ``~/.databrickscfg``, CLI login).

    Raises:
        DatabricksAuthError: no credentials could be found.
    """
    from databricks.sdk import WorkspaceClient

    try:
        return WorkspaceClient()
    except ValueError:
        raise DatabricksAuthError() from None


def existing_job_ids(client: WorkspaceClient, name: str) -> list[int]:
    """The ids of the jobs named exactly ``name`` (the API's name filter ignores case; this does not)."""
    found = client.jobs.list(name=name)
    return sorted(j.job_id for j in found if j.job_id is not None and j.settings and j.settings.name == name)


def deploy(settings: Settings, client: WorkspaceClient | None, dry_run: bool = False) -> DeployResult:
    """Create the job, or overwrite the one job with the same name; with ``dry_run`` only build its settings.

    Args:
        settings: the whole configuration (see ``build_job`` for what is read).
        client: a workspace client (unused, and may be ``None``, with ``dry_run``).
        dry_run: build the settings and touch no workspace.

    Returns:
        What was done (``created``, ``updated`` or ``planned``), the job's name, id and settings as sent.

    Raises:
        ConfigError: the config cannot make a job (see ``check_deployable``).
        DuplicateJobsError: more than one job already has this name.
        DeployError: the workspace refused a call.
    """
    job = build_job(settings)
    body = job.as_dict()
    name = str(job.name)
    if dry_run:
        return DeployResult("planned", name, None, body)
    if client is None:
        raise ValueError("a WorkspaceClient is needed unless dry_run")
    from databricks.sdk.errors import DatabricksError

    try:
        ids = existing_job_ids(client, name)
        if len(ids) > 1:
            raise DuplicateJobsError(name, ids)
        if ids:
            client.jobs.reset(ids[0], new_settings=job)
            log.info("deploy.updated", job=name, job_id=ids[0])
            return DeployResult("updated", name, ids[0], body)
        created = client.jobs.create(**job.as_shallow_dict())
    except DatabricksError as err:
        raise DeployError(f"the workspace refused the job '{name}': {_first_line(err)}") from None
    log.info("deploy.created", job=name, job_id=created.job_id)
    return DeployResult("created", name, created.job_id, body)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def dashboard_next_to_job(settings: Settings, client: WorkspaceClient | None, job: str,
                          dry_run: bool = False) -> Any:
    """The AI/BI dashboard over the outputs, deployed with the job when ``deploy.dashboard.warehouse_id`` is set.

    Returns:
        ``None`` without a warehouse; with ``dry_run`` the plan as a dict (contacting no workspace); else the
        ``DashboardResult`` (created or updated, then published).
    """
    from gatewatch.views.dashboard import deploy_dashboard, plan

    if settings.deploy.dashboard.warehouse_id is None:
        log.info("deploy.no_dashboard", hint="set deploy.dashboard.warehouse_id to deploy the dashboard")
        return None
    if dry_run or client is None:
        return plan(settings, job).as_dict()
    return deploy_dashboard(settings, client, job)
