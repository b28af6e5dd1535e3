"""The SparkSession: Databricks' own on a cluster, a Spark Connect server, or local Spark with Delta.

Locally the Delta jars are resolved once by Spark's own Maven client
(``spark.jars.packages``, as ``delta.configure_spark_with_delta_pip`` does)
into a cache folder, and every later session loads them from there with
``spark.jars``: nothing is fetched per run or per test.

With ``spark.remote`` (``--remote sc://host:port``) or ``SPARK_REMOTE`` the
session is a Spark Connect client: the server holds Spark and Delta, and
only session settings are set from here. Product code runs the same on
both: SQL and DataFrame calls only, no ``sparkContext`` and no JVM handles
(``is_connect`` tells the two apart where a thread needs the session).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from gatewatch.errors import (
    ConfigError,
    ConnectUnreachableError,
    DeltaJarsMissingError,
    JarFetchError,
    JavaNotFoundError,
)
from gatewatch.settings import SparkSettings

log = structlog.get_logger("gatewatch.spark")

SCALA_VERSION = "2.13"


def on_databricks() -> bool:
    """True inside a Databricks runtime, where Spark and Delta are provided."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def delta_artifact() -> str:
    """The Maven coordinate of the Delta connector matching the installed pyspark."""
    import pyspark

    spark_mm = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_mm}_{SCALA_VERSION}:{metadata.version('delta-spark')}"


def jars_dir() -> Path:
    """Where the Delta jars are cached: ``GATEWATCH_JARS_DIR`` or the user cache."""
    explicit = os.environ.get("GATEWATCH_JARS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "gatewatch" / "jars" / delta_artifact().split(":", 1)[1].replace(":", "-")


def cached_jars() -> list[str]:
    """The jar files in the cache, or an empty list when the connector is absent."""
    folder = jars_dir()
    jars = sorted(glob.glob(str(folder / "*.jar")))
    connector = delta_artifact().split(":")[1]
    return jars if any(connector in Path(j).name for j in jars) else []


def check_java() -> None:
    """Raise ``JavaNotFoundError`` unless a Java runtime can be started."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise JavaNotFoundError()


def fetch_jars(*, quiet: bool = False) -> Path:
    """Resolve the Delta connector and its dependencies into the jar cache, once.

    Spark's own resolver (Ivy against Maven Central) does the fetching in a
    short-lived child process, so the caller's JVM, if any, is untouched.
    Returns the cache folder. A second call finds the jars and does nothing.
    """
    folder = jars_dir()
    if cached_jars():
        return folder
    check_java()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gatewatch-ivy-") as ivy:
        code = (
            "from pyspark.sql import SparkSession\n"
            "s = (SparkSession.builder.master('local[1]')"
            f".config('spark.jars.packages', {delta_artifact()!r})"
            f".config('spark.jars.ivy', {ivy!r})"
            ".config('spark.ui.enabled', 'false').getOrCreate())\n"
            "s.stop()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
        )
        fetched = glob.glob(os.path.join(ivy, "jars", "*.jar"))
        if done.returncode != 0 or not fetched:
            tail = " ".join((done.stderr or "").strip().splitlines()[-3:])
            raise JarFetchError(
                f"could not fetch {delta_artifact()} from Maven Central ({tail[-300:]}).",
                fix="check access to Maven Central, or set GATEWATCH_JARS_DIR to a "
                "folder holding the Delta jars.",
            )
        for jar in fetched:
            shutil.copy2(jar, folder / Path(jar).name)
    if not quiet:
        print(f"Delta jars cached in {folder}", file=sys.stderr)
    return folder


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (serverless, standard access mode, ``--remote``)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def thread_target(spark: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped to run on another thread with ``spark``'s thread state (job tags, local properties)."""
    from pyspark.util import inheritable_thread_target

    return inheritable_thread_target(spark)(fn)


def in_parallel(spark: Any, *calls: Callable[[], Any], name: str = "gatewatch") -> list[Any]:
    """Run ``calls`` in threads of their own with ``spark``'s thread state; their results, in order.

    The first failure is raised once all finished. Delta commits to
    different tables run this way overlap their fixed costs (planning, the
    write job, the commit and its hooks).
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix=name) as pool:
        futures = [pool.submit(thread_target(spark, call)) for call in calls]
        return [future.result() for future in futures]


WORKER_SLOW_TO_START = "Timed out while waiting for the Python worker to connect back"
"""How a Spark Connect server says the Python process of a ``foreachBatch`` did not start within its fixed 10 s."""

START_ATTEMPTS = 3


def start_writer(writer: Any, name: str) -> Any:
    """``writer.start()``, tried again when the server's Python worker was slow to start.

    Over Spark Connect the server starts one Python process per
    ``foreachBatch`` query and waits a fixed 10 s for it to connect back; a
    busy server misses that and refuses the start, with nothing started or
    written to the checkpoint, so the start is simply tried again.
    """
    attempt = 1
    while True:
        try:
            return writer.start()
        except Exception as err:
            if WORKER_SLOW_TO_START not in str(err) or attempt == START_ATTEMPTS:
                raise
            log.warning("python_worker_slow_to_start", query=name, attempt=attempt, of=START_ATTEMPTS)
            attempt += 1


def remote_url(settings: SparkSettings) -> str | None:
    """The Spark Connect server to use: ``spark.remote``, else ``SPARK_REMOTE``, else None (local Spark)."""
    return settings.remote or os.environ.get("SPARK_REMOTE") or None


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Open and close a TCP connection to the server of ``url`` (``sc://host:port/;params``).

    Spark Connect's client retries an unreachable server for minutes before
    it fails; this answers at once.

    Raises:
        ConnectUnreachableError: naming the address and why.
    """
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url.split(";", 1)[0].replace("sc://", "http://", 1))
    host, port = parsed.hostname, parsed.port or 15002
    if not host:
        raise ConfigError("spark.remote", "a Spark Connect URL sc://host:port", url)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise ConnectUnreachableError(f"sc://{host}:{port}", err.strerror or type(err).__name__) from None


CONNECT_CONF = {"spark.sql.session.timeZone": "UTC"}
"""Session settings gatewatch sets over Spark Connect (a server's static settings are its own)."""


def connect_spark(url: str, settings: SparkSettings):
    """A Spark Connect session on ``url`` with the session settings gatewatch needs and ``spark.conf``.

    Raises:
        ConnectUnreachableError: the server does not answer.
        ConfigError: the server refused one of ``spark.conf``'s settings.
    """
    from pyspark.sql import SparkSession

    check_reachable(url)
    return apply_conf(SparkSession.builder.remote(url).getOrCreate(), {**CONNECT_CONF, **settings.conf}, settings)


def apply_conf(spark: Any, conf: dict[str, str], settings: SparkSettings) -> Any:
    """Set ``conf`` on the session; a setting of ``spark.conf`` the session refuses is a ``ConfigError``."""
    for key, value in conf.items():
        try:
            spark.conf.set(key, value)
        except Exception as err:  # noqa: BLE001 - a setting the server does not allow a session to change
            if key in settings.conf:
                raise ConfigError(f"spark.conf.{key}", "a setting the session may change at run time",
                                  str(err).strip().splitlines()[0][:200]) from None
            raise
    return spark


LOCAL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.snapshotPartitions": "2",  # a Delta log replay of a small table: 2 tasks, not 50
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
}
"""What every local session and local Spark Connect server gets: Delta's SQL extension and catalog, UTC, no console bars."""


def build_spark(settings: SparkSettings | None = None, app_name: str = "gatewatch"):
    """Return the SparkSession to run on.

    On Databricks this is the cluster's session (a Spark Connect one on
    serverless and in standard access mode). With ``spark.remote`` or
    ``SPARK_REMOTE`` it is a Spark Connect session on that server. Elsewhere
    it is local Spark with the Delta SQL extension and catalog and the
    cached Delta jars.

    Raises:
        JavaNotFoundError: no Java runtime.
        DeltaJarsMissingError: the jar cache has no Delta connector.
        ConnectUnreachableError: the Spark Connect server does not answer.
    """
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    if on_databricks():  # the cluster's (or serverless) session: only ``spark.conf`` is set, at run time
        return apply_conf(SparkSession.builder.getOrCreate(), dict(settings.conf), settings)
    url = remote_url(settings)
    if url:
        return connect_spark(url, settings)
    check_java()
    jars = cached_jars()
    if not jars:
        raise DeltaJarsMissingError(str(jars_dir()), delta_artifact())
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(app_name)
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.default.parallelism", str(settings.shuffle_partitions))
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.ui.enabled", str(settings.ui).lower())
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .config("spark.sql.adaptive.enabled", "true")
    )
    for key, value in {**LOCAL_CONF, **settings.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"
"""The Spark Connect server's main class (its jar ships in PySpark's wheel)."""


def connect_server_command(port: int, *, host: str = "127.0.0.1", master: str = "local[2]",
                           driver_memory: str = "2g", conf: dict[str, str] | None = None) -> list[str]:
    """The ``spark-submit`` command of a local Spark Connect server with Delta on ``host:port``.

    The server loads the cached Delta jars and sets Delta's SQL extension
    and catalog; its Python workers (``foreachBatch``) run this Python.

    Raises:
        DeltaJarsMissingError: the jar cache has no Delta connector (``gatewatch setup``).
    """
    import pyspark

    jars = cached_jars()
    if not jars:
        raise DeltaJarsMissingError(str(jars_dir()), delta_artifact())
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    settings = {
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        **LOCAL_CONF,
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.pyspark.python": sys.executable,
        # a busy machine may take longer than the default 15 s to start the Python process of a foreachBatch
        "spark.python.authenticate.socketTimeout": "120s",
        "spark.pyspark.driver.python": sys.executable,
        **(conf or {}),
    }
    command = [str(submit), "--class", CONNECT_SERVER, "--master", master, "--jars", ",".join(jars)]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return command
