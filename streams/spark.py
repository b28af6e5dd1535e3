"""The SparkSession: Databricks' own on a cluster, local Spark with Delta elsewhere.

Locally the Delta jars are resolved once by Spark's own Maven client
(``spark.jars.packages``, as ``delta.configure_spark_with_delta_pip`` does)
into a cache folder, and every later session loads them from there with
``spark.jars``: nothing is fetched per run or per test.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from gatewatch.errors import DeltaJarsMissingError, JarFetchError, JavaNotFoundError
from gatewatch.settings import SparkSettings

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


def build_spark(settings: SparkSettings | None = None, app_name: str = "gatewatch"):
    """Return the SparkSession to run on.

    On Databricks this is the cluster's session. Elsewhere it is local Spark
    with the Delta SQL extension and catalog and the cached Delta jars.

    Raises:
        JavaNotFoundError: no Java runtime.
        DeltaJarsMissingError: the jar cache has no Delta connector.
    """
    from pyspark.sql import SparkSession

    if on_databricks():
        return SparkSession.builder.getOrCreate()
    settings = settings or SparkSettings()
    check_java()
    jars = cached_jars()
    if not jars:
        raise DeltaJarsMissingError(str(jars_dir()), delta_artifact())
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(app_name)
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.default.parallelism", str(settings.shuffle_partitions))
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.ui.enabled", str(settings.ui).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.adaptive.enabled", "true")
    )
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
