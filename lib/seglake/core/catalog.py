"""Tables by name: a run's bronze, silver and gold Delta tables registered in the Spark catalog.

With ``catalog: {database: NAME}`` in the config, every table a run writes is also known to the
session's catalog as ``NAME.<layer>_<table>`` (``seglake.gold_segments``), so that analysts query it
with SQL: ``spark.sql("select * from seglake.gold_segments where run_id = 'demo'")``. The name is
an *external* table over the Delta folder seglake writes (``CREATE TABLE ... USING DELTA
LOCATION``), so it always shows the folder's latest version and dropping it deletes nothing.

Where the names live is the session's catalog: Spark's built-in in-memory catalog in local mode
(names last as long as the session: ``seglake run`` registers them for its own run; a notebook
calls :func:`register_existing` in its session), a Hive metastore on a cluster, Unity Catalog on
Databricks (``database: main.marketing``, a ``catalog.schema``). A plain database is created, when
missing, with its folder at ``<lakehouse>/_catalog/<database>.db``. A name that already points at
another folder (another use case registered into the same database) is an error, never re-pointed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import SparkSession

from seglake.core.artifacts import list_folders
from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.tables import Tables, delta_exists, sql_string

LAYERS = ("bronze", "silver", "gold")


def _quoted(name: str) -> str:
    return ".".join(f"`{part}`" for part in name.split("."))


def table_name(database: str, table: str) -> str:
    """The catalog name of a lakehouse table (``layer/table``) in ``database``.

    Examples
    --------
    >>> table_name("seglake", "gold/segments")
    'seglake.gold_segments'
    >>> table_name("main.marketing", "bronze/ingest_log")
    'main.marketing.bronze_ingest_log'
    """
    layer, name = table.split("/", 1)
    return f"{database}.{layer}_{name.replace('/', '_')}"


def _same_folder(registered: str, path: str) -> bool:
    def plain(location: str) -> str:
        for scheme in ("file://", "file:"):
            if location.startswith(scheme):
                location = location[len(scheme):]
        return location.rstrip("/")
    return plain(registered) == plain(path)


def register(spark: SparkSession, config: SeglakeConfig, tables: Iterable[str]) -> list[str]:
    """Register each of ``tables`` (``layer/table``, bronze/silver/gold only) that exists as Delta.

    Creates the database when missing; a name already registered for the same folder is left as it
    is (re-runs are idempotent). Returns the catalog names, sorted; nothing without ``catalog``.

    Raises
    ------
    SeglakeError
        One line when a name already points at a different folder.

    Examples
    --------
    >>> import tempfile
    >>> from seglake.core.config import CatalogConfig
    >>> frame = spark.createDataFrame([("r1", "u1", 0)], "run_id string, entity_id string, segment int")
    >>> config = SeglakeConfig(name="doc_catalog", lakehouse=tempfile.mkdtemp(),
    ...                        entities={"path": "x.csv", "id": "id"},
    ...                        catalog=CatalogConfig(database="doc_seglake"))
    >>> frame.write.format("delta").save(Tables.of(config).gold("segments"))
    >>> register(spark, config, ["gold/segments", "gold/profiles", "models/kmeans"])  # only what exists
    ['doc_seglake.gold_segments']
    >>> spark.sql("select segment from doc_seglake.gold_segments where run_id = 'r1'").collect()
    [Row(segment=0)]
    """
    if config.catalog is None:
        return []
    database, paths = config.catalog.database, Tables.of(config)
    wanted = sorted({t for t in tables if t.split("/", 1)[0] in LAYERS})
    existing = [(t, paths.path(*t.split("/", 1))) for t in wanted]
    existing = [(t, path) for t, path in existing if delta_exists(spark, path)]
    if not existing:
        return []
    # a plain database gets its folder in the lakehouse, not a spark-warehouse/ in the working
    # directory; a Unity Catalog schema (catalog.schema) is placed by its catalog
    where = "" if "." in database else f" LOCATION {sql_string(f'{config.lakehouse}/_catalog/{database}.db')}"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quoted(database)}{where}")
    names = []
    for table, path in existing:
        name = table_name(database, table)
        if spark.catalog.tableExists(name):
            location = spark.sql(f"DESCRIBE DETAIL {_quoted(name)}").first()["location"]
            if not _same_folder(location, path):
                raise SeglakeError(f"catalog table {name} already points at {location}, not {path}: "
                                   f"give use case '{config.name}' its own catalog.database")
        else:
            spark.sql(f"CREATE TABLE {_quoted(name)} USING DELTA LOCATION {sql_string(path)}")
        names.append(name)
    return names


def register_existing(spark: SparkSession, config: SeglakeConfig) -> list[str]:
    """Register every bronze, silver and gold Delta table the use case's lakehouse holds, e.g. in a
    fresh notebook session, whose in-memory catalog starts empty. Returns the catalog names."""
    paths = Tables.of(config)
    return register(spark, config, [f"{layer}/{table}" for layer in LAYERS
                                    for table in list_folders(spark, f"{paths.root}/{layer}")])
