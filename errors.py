"""Every error a gatewatch user can act on, with the message that says how.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
no stack trace is shown for any of these.
"""

from __future__ import annotations

from pathlib import Path


class GatewatchError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message} Fix: {fix}")


class ConfigError(GatewatchError):
    """A config key is missing, unknown or of the wrong type."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        self.key = key
        self.expected = expected
        self.got = got
        detail = "" if got is None else f" (got {got!r})"
        super().__init__(f"config key '{key}': expected {expected}{detail}.")


class JavaNotFoundError(GatewatchError):
    """No Java runtime to start local Spark with."""

    def __init__(self) -> None:
        super().__init__(
            "Java was not found: local Spark needs a Java 17 or 21 runtime.",
            fix="install one (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME.",
        )


class ConnectUnreachableError(GatewatchError):
    """The Spark Connect server named by ``--remote`` or ``SPARK_REMOTE`` does not answer."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the Spark Connect server at {url} ({reason}).",
            fix="start the server (README, \"Spark Connect\"), or check --remote / SPARK_REMOTE.",
        )


class DeltaJarsMissingError(GatewatchError):
    """The Delta Lake jars for local Spark are not in the jar cache."""

    def __init__(self, jars_dir: str, artifact: str) -> None:
        super().__init__(
            f"the Delta Lake jars ({artifact}) are not in {jars_dir}.",
            fix="run `gatewatch setup` once (fetches them from Maven Central), "
            "or set GATEWATCH_JARS_DIR to a folder that already holds them.",
        )


class JarFetchError(GatewatchError):
    """Fetching the Delta jars failed."""


class SourceNotFoundError(GatewatchError):
    """The inference table to tail does not exist."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"source table '{source}' was not found.",
            fix="check the path or catalog name, and that it is a Delta table.",
        )


class UnknownCatalogError(GatewatchError):
    """A ``catalog.schema.table`` name whose catalog the Spark session does not have (Unity Catalog names run locally)."""

    def __init__(self, what: str, name: str, catalog: str) -> None:
        super().__init__(
            f"{what} '{name}' is in catalog '{catalog}', which this Spark session does not have.",
            fix="catalog.schema.table names need Unity Catalog (run on Databricks); "
            "on a laptop or in CI give a path instead.",
        )


class SourceSchemaError(GatewatchError):
    """The source is not an inference table of a known schema."""

    def __init__(self, source: str, missing: list[str], schema_name: str) -> None:
        self.missing = missing
        super().__init__(
            f"source '{source}' is not an inference table: missing columns "
            f"{', '.join(missing)} (closest known schema: {schema_name}).",
        )


class ChangeFeedDisabledError(GatewatchError):
    """The source table does not have change data feed on."""

    def __init__(self, source: str, *, is_path: bool = False) -> None:
        name = f"delta.`{source}`" if is_path else source  # SQL names a table by path as delta.`path`
        super().__init__(
            f"source '{source}' does not have change data feed enabled.",
            fix=f"ALTER TABLE {name} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true').",
        )


class SourceReplacedError(GatewatchError):
    """The source table was dropped and recreated under the stream."""

    def __init__(self, source: str, checkpoint: str, index: int = 0) -> None:
        super().__init__(
            f"source '{source}' was dropped and recreated since its checkpoint {checkpoint} was written.",
            fix=f"move the checkpoint aside (`mv {checkpoint} {checkpoint}.replaced`) and run again with "
            f"`--set sources.{index}.starting_version=earliest` (or the first version of the new table to read).",
        )


Resume = tuple[int, "int | str | None", bool]
"""Where one source resumes on a new checkpoint: its index in ``sources``, the version, whether that version is in the outputs in part."""


def resume_sets(resumes: list[Resume] | tuple[Resume, ...]) -> str:
    """The ``--set sources.N.starting_version=V`` of each source, with the caveat of a version written in part."""
    sets = " ".join(
        f"`--set sources.{index}.starting_version="
        f"{'<first source version not yet in the outputs>' if version is None else version}`"
        for index, version, _ in resumes
    )
    partial = [f"version {v}" + (f" of sources.{i}" if len(resumes) > 1 else "") for i, v, part in resumes if part]
    caveat = f" ({', '.join(partial)} is in the outputs in part: those rows will be written again)" if partial else ""
    return sets + caveat


class CheckpointCorruptError(GatewatchError):
    """The checkpoint cannot be read.

    ``resume`` is the first source version the outputs do not hold entirely,
    when known: restarting there on a new checkpoint loses nothing, and
    duplicates nothing unless ``partial`` (that version is written in part).
    ``more`` gives the same for the other sources of a query that reads several.
    """

    def __init__(
        self, checkpoint: str, detail: str, index: int = 0, resume: int | str | None = None, partial: bool = False,
        more: tuple[Resume, ...] = (),
    ) -> None:
        self.checkpoint, self.detail = checkpoint, detail
        super().__init__(
            f"checkpoint {checkpoint} cannot be read ({detail}).",
            fix=f"move it aside (`mv {checkpoint} {checkpoint}.corrupt`) and run again with "
            f"{resume_sets(((index, resume, partial), *more))}.",
        )


class SourcesChangedError(GatewatchError):
    """A source was added to or removed from a query that reads several: its checkpoint no longer fits."""

    def __init__(self, query: str, checkpoint: str, detail: str, resumes: tuple[Resume, ...] = ()) -> None:
        self.query, self.checkpoint = query, checkpoint
        restart = (f"move the checkpoint aside (`mv {checkpoint} {checkpoint}.old`) and run again with "
                   f"{resume_sets(resumes)}" if resumes else
                   f"move the checkpoint aside (`mv {checkpoint} {checkpoint}.old`) and run again with each source's "
                   "`starting_version` set to the first version not yet in the outputs")
        super().__init__(
            f"the sources of query '{query}' changed since its checkpoint {checkpoint} was written ({detail}).",
            fix=f"give an added source a query of its own (`--set sources.N.group=NAME`), or {restart}.",
        )


class CheckpointLayoutError(GatewatchError):
    """A source with a checkpoint of its own is now configured into a query of several sources."""

    def __init__(self, source: str, index: int, own: str, query: str, checkpoint: str) -> None:
        super().__init__(
            f"source '{source}' has a checkpoint of its own ({own}), but is now read by query '{query}' "
            f"(checkpoint {checkpoint}), which would read it again from its starting_version.",
            fix=f"keep it in a query of its own (`--set sources.{index}.group={Path(own).name}`), or move {own} "
            f"aside and set `sources.{index}.starting_version` to the first version not yet in the outputs.",
        )


class StreamFailedError(GatewatchError):
    """A streaming query stopped with an error."""

    exit_code = 1


class UnsupportedExpectationError(GatewatchError):
    """The expectation suite uses a type the row-level compiler cannot run."""


class ParserRegistrationError(GatewatchError):
    """A user parser module could not be loaded or does not follow the contract."""


class SinkError(GatewatchError):
    """An alert sink is misconfigured."""


class MissingExtraError(GatewatchError):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'gatewatch[{extra}]'")


class DeployError(GatewatchError):
    """The workspace refused to create or update the gatewatch job."""


class DuplicateJobsError(DeployError):
    """Several jobs have the name ``gatewatch deploy`` would create or update."""

    def __init__(self, name: str, job_ids: list[int]) -> None:
        self.job_ids = job_ids
        super().__init__(
            f"{len(job_ids)} jobs are named '{name}' (job ids {', '.join(str(i) for i in job_ids)}); "
            "deploy updates exactly one.",
            fix="delete or rename all but one of them, or choose another name with --name.",
        )


class DatabricksAuthError(GatewatchError):
    """No Databricks workspace credentials were found."""

    def __init__(self) -> None:
        super().__init__(
            "no Databricks workspace credentials were found.",
            fix="set DATABRICKS_HOST=https://<workspace>.cloud.databricks.com and DATABRICKS_TOKEN, "
            "or run `databricks auth login --host https://<workspace>.cloud.databricks.com` "
            "and set DATABRICKS_CONFIG_PROFILE; --dry-run needs none.",
        )
