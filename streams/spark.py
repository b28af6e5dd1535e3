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

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
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


def _java() -> Path | None:
    """The ``java`` a local Spark starts (``JAVA_HOME``'s, else the one on ``PATH``), or None."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    return Path(java) if java and Path(java).exists() else None


def check_java() -> None:
    """Raise ``JavaNotFoundError`` unless a Java runtime can be started."""
    if _java() is None:
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


QUIET_CDS = "-Xlog:cds*=off"
"""The JVM option that keeps class-archive messages (a stale archive, classes it skips) off the console."""


def class_archive() -> Path | None:
    """Where the JVM class-data archive of this Java, this PySpark and the cached jars lives (None: no Java).

    The file sits next to the Delta jars; its name says which Java and which
    PySpark install it was made with (the jars folder's time: the JVM maps
    an archive only for the very jar files it was made from, and silently
    ignores it otherwise), so another of either makes another archive
    rather than a stale one.
    """
    import pyspark

    java = _java()
    if java is None:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    installed = jars.stat().st_mtime_ns if jars.exists() else 0
    tag = hashlib.sha1(f"{java.resolve()}|{pyspark.__version__}|{jars}|{installed}".encode()).hexdigest()[:12]
    return jars_dir() / f"classes-{tag}.jsa"


_ARCHIVE_RUN = """
import sys, tempfile
from pyspark import SparkContext
from gatewatch.settings import SparkSettings
from gatewatch.streams.spark import build_spark
options = f"-XX:ArchiveClassesAtExit={sys.argv[1]} {sys.argv[2]}"
spark = build_spark(SparkSettings(master="local[1]", shuffle_partitions=1, driver_memory="1g", class_archive=False,
                                  conf={"spark.driver.extraJavaOptions": options}), app_name="gatewatch-setup")
with tempfile.TemporaryDirectory(prefix="gatewatch-archive-") as d:
    rows = spark.range(20).selectExpr("id", "cast(id as string) AS s")
    rows.write.format("delta").option("delta.enableChangeDataFeed", "true").save(f"{d}/t")
    spark.sql(f"DESCRIBE DETAIL delta.`{d}/t`").collect()
    rows.write.format("delta").mode("append").option("txnAppId", "a").option("txnVersion", 1).save(f"{d}/t")
    feed = spark.readStream.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).load(f"{d}/t")
    feed.writeStream.trigger(availableNow=True).option("checkpointLocation", f"{d}/c").foreachBatch(
        lambda b, i: b.groupBy("_change_type").count().collect()).start().awaitTermination()
    rows.createOrReplaceTempView("archive_rows")
    spark.sql(f"MERGE INTO delta.`{d}/t` t USING archive_rows s ON t.id = s.id WHEN MATCHED THEN UPDATE SET *")
gateway = SparkContext._gateway
spark.stop()
gateway.shutdown()
gateway.proc.stdin.close()  # the JVM exits on its input's end, writing the archive
sys.exit(gateway.proc.wait(timeout=300))
"""


def build_class_archive(*, quiet: bool = False) -> Path | None:
    """Make the JVM class-data archive of Spark's classes, once; None when it could not be made.

    A short local Spark job in a child process loads what a run loads
    (Delta reads and writes, the change feed, a streaming query, a MERGE);
    the JVM writes the classes it loaded to the archive as it exits
    (``-XX:ArchiveClassesAtExit``). Sessions started later map them instead
    of loading and verifying them again (``build_spark``): local Spark and
    its first Delta reads are ready about 3 s sooner on 2 cores
    (``bench/jvm_start.py``). The archive is a speed-up only: a run without
    one is the same run.
    """
    target = class_archive()
    if target is None or target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        done = subprocess.run([sys.executable, "-c", _ARCHIVE_RUN, str(partial), QUIET_CDS],
                              capture_output=True, text=True, check=False, timeout=600)
        if done.returncode == 0 and partial.exists():
            os.replace(partial, target)
            if not quiet:
                print(f"JVM class archive made in {target}", file=sys.stderr)
            prune_archives(target)
            return target
        reason = " ".join((done.stderr or "").strip().splitlines()[-2:])[-300:] or f"exit code {done.returncode}"
    except subprocess.TimeoutExpired:
        reason = "the archiving run took longer than 600 s"
    finally:
        partial.unlink(missing_ok=True)
    log.warning("class_archive_not_made", reason=reason, effect="local Spark starts without it, a few seconds slower")
    return None


KEPT_ARCHIVES = 3
"""Class archives kept in the jars folder: the one just made and the newest others (other installs in use)."""


def prune_archives(made: Path, keep: int = KEPT_ARCHIVES) -> list[Path]:
    """Delete all but the ``keep`` newest class archives next to ``made`` (``made`` always kept); return those deleted.

    Every other Java or PySpark install (a virtualenv made again, a CI
    clone) makes an archive of its own, ~200 MB each. One deleted while
    its install is still in use costs that install's runs their faster
    start, never a result (a running JVM keeps the file it mapped), and
    ``gatewatch setup`` makes it again. Leftovers of an archiving run that
    was killed (``*.partial``, older than an hour) go too.
    """
    folder = made.parent
    others = sorted((p for p in folder.glob("classes-*.jsa") if p != made), key=_modified, reverse=True)
    stale = others[max(0, keep - 1):]
    stale += [p for p in folder.glob("classes-*.jsa.*.partial") if time.time() - _modified(p) > 3600]
    freed = 0
    for path in stale:
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    if stale:
        log.info("class_archives_pruned", deleted=[p.name for p in stale], freed_mb=round(freed / 2**20))
    return stale


def _modified(path: Path) -> float:
    """When ``path`` was last written; now when it is gone already (another setup removed or renamed it)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


PARALLEL_GC = "-XX:+UseParallelGC"
"""Local Spark's collector: with 2 cores and a 4 GB driver, gatewatch ran 1M rows in 85.2-85.9 s with it and in
90.6-94.2 s with the JVM's default G1 (alternating runs); its pauses are well under a micro-batch."""


JIT_SCALING = "-XX:CompileThresholdScaling"
"""Local Spark's JIT thresholds: 1M rows with them scaled by 4 took 94.5-96.2 s against 96.6-100.0 s at the JVM's
default, alternating runs (the compiler threads' CPU 39-41 s against 55-57 s, of 164-168 s against 180-182 s in
all); ``spark.jit_threshold_scaling``."""


def java_options(settings: SparkSettings) -> str | None:
    """The driver's JVM options: the user's ``spark.driver.extraJavaOptions``, the parallel collector unless they
    pick a collector, the JIT's thresholds unless they set them, and the class archive when there is one."""
    own = settings.conf.get("spark.driver.extraJavaOptions")
    gc = PARALLEL_GC if settings.parallel_gc and not re.search(r"-XX:\+Use\w+GC\b", own or "") else None
    scaling = settings.jit_threshold_scaling
    jit = f"{JIT_SCALING}={scaling:g}" if scaling != 1 and JIT_SCALING not in (own or "") else None
    archive = class_archive() if settings.class_archive else None
    cds = (f"-XX:SharedArchiveFile={archive}", QUIET_CDS) if archive is not None and archive.exists() else ()
    return " ".join(filter(None, (own, gc, jit, *cds))) or None


def is_connect(spark: Any) -> bool:
    """True for a Spark Connect session (serverless, standard access mode, ``--remote``)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


FIRST_COMMIT_COMPACTION = "spark.databricks.delta.autoCompact.modifiedPartitionsOnly.enabled"
"""Delta's auto compaction mode: on (its default), a process compacts each table at the first commit it makes to it,
then whenever the table gathered ``autoCompact.minNumFiles`` (50) small files; off, only on the second count, which
is of the files this process's own commits added."""


def compact_own_files(spark: Any, settings: SparkSettings) -> Callable[[], None] | None:
    """On local Spark, have auto compaction count only the files this process's commits add; a call undoes it.

    For a job whose output tables were all created at its start, that count
    is every file the tables hold: Delta's first-commit pass (a rebuild of
    the table's state to plan a compaction of its one file: four Spark jobs,
    0.5-0.9 s a table on 2 cores, seven tables in the first batch) has
    nothing to do. A job on existing tables keeps Delta's default, which
    compacts what earlier runs left at its first commits. Left alone on
    Databricks, over Spark Connect and when ``spark.conf`` sets it.
    Returns the call that restores the session's setting, or None.
    """
    if is_connect(spark) or on_databricks() or FIRST_COMMIT_COMPACTION in settings.conf \
            or not spark.sparkContext.master.startswith("local"):
        return None
    before = spark.conf.get(FIRST_COMMIT_COMPACTION, None)
    spark.conf.set(FIRST_COMMIT_COMPACTION, "false")

    def restore() -> None:
        if before is None:
            spark.conf.unset(FIRST_COMMIT_COMPACTION)
        else:
            spark.conf.set(FIRST_COMMIT_COMPACTION, before)

    return restore


def own_session(spark: Any) -> Any:
    """A session of its own for background work on classic Spark (with ``compact_own_files``' setting, when made);
    over Spark Connect ``spark`` itself (its client is thread-safe)."""
    if is_connect(spark):
        return spark
    session = spark.newSession()  # a new session starts from the Spark configuration, not from ``spark``'s settings
    mode = spark.conf.get(FIRST_COMMIT_COMPACTION, None)
    if mode is not None:
        session.conf.set(FIRST_COMMIT_COMPACTION, mode)
    return session


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
    # a batch's parsed rows are kept in memory for one batch only (streams.batch.materialize): compressing them
    # first spent ~17% of the task threads' CPU of a 1M-row run gathering per-column encoding statistics
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # timestamps as Parquet INT64 microseconds, not the legacy INT96: INT96 values were dictionary-encoded as byte
    # arrays, about half the dictionary time of every output write
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
"""What every local session and local Spark Connect server gets: Delta's SQL extension and catalog, UTC, no console
bars, the batch's rows kept uncompressed, timestamps written as INT64 microseconds."""


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
    options = java_options(settings)
    if options:
        builder = builder.config("spark.driver.extraJavaOptions", options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"
"""The Spark Connect server's main class (its jar ships in PySpark's wheel)."""


def connect_server_command(port: int, *, host: str = "127.0.0.1", master: str = "local[2]",
                           driver_memory: str = "2g", conf: dict[str, str] | None = None) -> list[str]:
    """The ``spark-submit`` command of a local Spark Connect server with Delta on ``host:port``.

    The server loads the cached Delta jars and sets Delta's SQL extension
    and catalog; its Python workers (``foreachBatch``) run this Python; its
    JVM starts from the class archive when ``gatewatch setup`` made one.

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
    options = java_options(SparkSettings(conf=conf or {}))
    if options:
        settings["spark.driver.extraJavaOptions"] = options
    command = [str(submit), "--class", CONNECT_SERVER, "--master", master, "--jars", ",".join(jars)]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return command
