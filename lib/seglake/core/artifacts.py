"""Fitted artefacts of a run: the one module that writes model files and manifests.

Layout under ``<lakehouse>/<name>/models/<run_id>/``::

    manifest.json           the run: entities table version, filter, features and their types,
                            training quantile bins per feature (drift), library versions, k, seed
    transform/              the prepare PipelineModel (MLlib persistence)
    kmeans/                 the chosen clustering model (MLlib persistence, whatever the algorithm)
    manifest-density.json   the density surrogates (XGBoost JSON files beside it)
    manifest-explain.json   the per-target explain models
    assigner/manifest.json  MovieLens's assigner; ``classifier/manifest.json`` the claims classifier

Every manifest has one format: ``{"files": {name: sha256}, "details": {...}, "written_at": ...}``.
``files`` lists every artefact the manifest describes, a single file or an MLlib folder (whose
checksum covers each file's relative path and bytes), and loading refuses an artefact whose
checksum differs. Everything goes through Hadoop file systems when the lakehouse is a URI (HDFS,
S3, DBFS), so the same code writes to a local folder or a cluster's storage. Nothing is pickled: a
model saved by one Spark version loads in the next, and scoring needs no Python objects from the
training process.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from seglake.core.errors import SeglakeError
from seglake.core.run_cache import remember_model, remembered_model

MANIFEST = "manifest.json"
DENSITY_MANIFEST = "manifest-density.json"
EXPLAIN_MANIFEST = "manifest-explain.json"
TRANSFORM = "transform"
CLUSTERING = "kmeans"


# ---------------------------------------------------------------- small files, local or Hadoop


def _local(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri))
    return None if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", uri) else Path(uri)


def _filesystem(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def path_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` exists on its (Hadoop-compatible) file system.

    Examples
    --------
    >>> import tempfile
    >>> path_exists(spark, tempfile.gettempdir()), path_exists(spark, "/nonexistent/manifest.json")
    (True, False)
    """
    local = _local(path)
    if local is not None:
        return local.exists()
    fs, hadoop_path = _filesystem(spark, path)
    return bool(fs.exists(hadoop_path))


def list_folders(spark: SparkSession, path: str) -> list[str]:
    """The names of the folders directly inside ``path`` (local or Hadoop), sorted; [] if missing.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "segments").mkdir(); (root / "runs").mkdir(); _ = (root / "a.json").write_text("{}")
    >>> list_folders(spark, str(root)), list_folders(spark, str(root / "missing"))
    (['runs', 'segments'], [])
    """
    local = _local(path)
    if local is not None:
        return sorted(p.name for p in local.iterdir() if p.is_dir()) if local.is_dir() else []
    fs, hadoop_path = _filesystem(spark, path)
    if not fs.exists(hadoop_path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(hadoop_path) if status.isDirectory())


def put_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` (a local path or any Hadoop-compatible URI), replacing it.

    Examples
    --------
    >>> import shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> put_bytes(spark, folder + "/models/r1/spec.json", b'{"k": 4}')  # parent folders created
    >>> get_bytes(spark, folder + "/models/r1/spec.json")
    b'{"k": 4}'
    >>> shutil.rmtree(folder)
    """
    local = _local(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return
    fs, path = _filesystem(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def get_bytes(spark: SparkSession, uri: str) -> bytes:
    """Read the whole file at ``uri``; a missing file is a :class:`SeglakeError`.

    Examples
    --------
    >>> get_bytes(spark, "/nonexistent/models/r1/surrogate.json")
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: model file not found: /nonexistent/models/r1/surrogate.json
    """
    local = _local(uri)
    if local is not None:
        if not local.is_file():
            raise SeglakeError(f"model file not found: {uri}")
        return local.read_bytes()
    rows = spark.read.format("binaryFile").load(uri).select("content").head(1)
    if not rows:
        raise SeglakeError(f"model file not found: {uri}")
    return bytes(rows[0][0])


def _files_under(spark: SparkSession, folder: str) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every file under ``folder``, sorted; checksum files left out
    (Hadoop's ``.crc`` files are derived from the others)."""
    local = _local(folder)
    if local is not None:
        return [(p.relative_to(local).as_posix(), p.read_bytes()) for p in sorted(local.rglob("*"))
                if p.is_file() and not p.name.startswith(".")]
    fs, root = _filesystem(spark, folder)
    prefix = fs.makeQualified(root).toString().rstrip("/") + "/"
    found, listing = [], fs.listFiles(root, True)
    while listing.hasNext():
        path = listing.next().getPath().toString()
        if not path.rsplit("/", 1)[-1].startswith("."):
            found.append(path[len(prefix):])
    return [(name, get_bytes(spark, f"{folder}/{name}")) for name in sorted(found)]


def checksum(spark: SparkSession, uri: str) -> str:
    """sha256 of a file, or of an MLlib model folder (every file's relative path and bytes).

    Examples
    --------
    >>> import hashlib, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> put_bytes(spark, folder + "/spec.json", b"{}")
    >>> checksum(spark, folder + "/spec.json") == hashlib.sha256(b"{}").hexdigest()
    True
    >>> digest = hashlib.sha256(b"{}").digest()  # a folder: each file's relative path and sha256
    >>> checksum(spark, folder) == hashlib.sha256(b"spec.json\\0" + digest).hexdigest()
    True
    >>> shutil.rmtree(folder)
    """
    local = _local(uri)
    if local is not None and local.is_file():
        return hashlib.sha256(local.read_bytes()).hexdigest()
    files = _files_under(spark, uri)
    if not files:
        if local is None and path_exists(spark, uri) and not _is_dir(spark, uri):
            return hashlib.sha256(get_bytes(spark, uri)).hexdigest()
        raise SeglakeError(f"model file not found: {uri}")
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _is_dir(spark: SparkSession, uri: str) -> bool:
    fs, path = _filesystem(spark, uri)
    return bool(fs.getFileStatus(path).isDirectory())


# ---------------------------------------------------------------- manifests


def write_manifest(
    spark: SparkSession,
    folder: str,
    details: dict[str, Any],
    files: dict[str, bytes] | None = None,
    saved: tuple[str, ...] = (),
    manifest: str = MANIFEST,
) -> dict[str, Any]:
    """Write ``files`` (name → bytes) under ``folder`` and a manifest listing every artefact's sha256.

    Parameters
    ----------
    folder : str
        A run's model folder (or a sub-folder such as ``assigner``).
    details : dict
        What was fitted on what (JSON-serialisable), returned by :func:`read_manifest`.
    files : dict, optional
        Small files to write (XGBoost JSON, specs, metrics).
    saved : tuple of str
        Artefacts already written under ``folder`` (MLlib model folders): checksummed, not written.
    manifest : str
        The manifest's file name.

    Returns
    -------
    dict
        The manifest as written: ``files`` (name → sha256), ``details`` and ``written_at``.

    Examples
    --------
    >>> import shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> body = write_manifest(spark, folder, {"k": 4}, files={"spec.json": b"{}"})
    >>> body["details"], body["files"]["spec.json"][:12], sorted(body)
    ({'k': 4}, '44136fa355b3', ['details', 'files', 'written_at'])
    >>> shutil.rmtree(folder)
    """
    checksums = {}
    for name, data in sorted((files or {}).items()):
        put_bytes(spark, f"{folder}/{name}", data)
        checksums[name] = hashlib.sha256(data).hexdigest()
    for name in saved:
        checksums[name] = checksum(spark, f"{folder}/{name}")
    body = {"files": checksums, "details": details,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    put_bytes(spark, f"{folder}/{manifest}", json.dumps(body, indent=2, sort_keys=True).encode())
    return body


def read_manifest(
    spark: SparkSession, folder: str, manifest: str = MANIFEST, produced_by: str = "sweep"
) -> dict[str, Any]:
    """A manifest as written by :func:`write_manifest`, or fail naming the stage that writes it.

    Examples
    --------
    >>> import shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_manifest(spark, folder, {"k": 4}, manifest=DENSITY_MANIFEST)
    >>> read_manifest(spark, folder, DENSITY_MANIFEST)["details"]
    {'k': 4}
    >>> read_manifest(spark, folder, produced_by="sweep")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: no manifest at .../manifest.json: run the sweep stage first
    >>> shutil.rmtree(folder)
    """
    path = f"{folder}/{manifest}"
    if not path_exists(spark, path):
        raise SeglakeError(f"no manifest at {path}: run the {produced_by} stage first")
    body = json.loads(get_bytes(spark, path))
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict) or "details" not in body:
        raise SeglakeError(f"{path} is not a seglake manifest (written by an older version?): "
                           f"run the {produced_by} stage again")
    return body


def verified_bytes(spark: SparkSession, folder: str, name: str, manifest: str = MANIFEST) -> bytes:
    """The bytes of model file ``name``, after checking its sha256 against ``manifest``.

    Raises
    ------
    SeglakeError
        When the manifest does not list the file or the checksum differs.

    Examples
    --------
    >>> import shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_manifest(spark, folder, {}, files={"surrogate.json": b"{}"})
    >>> verified_bytes(spark, folder, "surrogate.json")
    b'{}'
    >>> put_bytes(spark, folder + "/surrogate.json", b"{ }")  # changed after the manifest
    >>> verified_bytes(spark, folder, "surrogate.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: .../surrogate.json does not match its sha256 in manifest.json: ...
    >>> shutil.rmtree(folder)
    """
    listed = read_manifest(spark, folder, manifest)["files"]
    if name not in listed:
        raise SeglakeError(f"{folder}/{manifest} does not list {name}: refusing to load it")
    data = get_bytes(spark, f"{folder}/{name}")
    if hashlib.sha256(data).hexdigest() != listed[name]:
        raise SeglakeError(f"{folder}/{name} does not match its sha256 in {manifest}: refusing to load it")
    return data


def verify_saved(spark: SparkSession, folder: str, name: str, manifest: str = MANIFEST) -> str:
    """The path of MLlib folder ``name`` after checking its checksum against ``manifest``.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pyspark.ml import Pipeline
    >>> from pyspark.ml.feature import SQLTransformer
    >>> folder = tempfile.mkdtemp()
    >>> model = Pipeline(stages=[SQLTransformer(statement="SELECT * FROM __THIS__")]).fit(spark.range(1))
    >>> _ = save_model(model, folder + "/transform")
    >>> _ = write_manifest(spark, folder, {}, saved=("transform",))
    >>> verify_saved(spark, folder, "transform") == folder + "/transform"
    True
    >>> shutil.rmtree(folder)
    """
    listed = read_manifest(spark, folder, manifest)["files"]
    path = f"{folder}/{name}"
    if name not in listed:
        raise SeglakeError(f"{folder}/{manifest} does not list {name}: refusing to load it")
    if checksum(spark, path) != listed[name]:
        raise SeglakeError(f"{path} does not match its sha256 in {manifest}: refusing to load it")
    return path


def save_model(model, folder: str) -> str:
    """Save an MLlib model or PipelineModel to ``folder``, replacing what was there; return it.

    Examples
    --------
    >>> import os, shutil, tempfile
    >>> from pyspark.ml import Pipeline
    >>> from pyspark.ml.feature import SQLTransformer
    >>> folder = tempfile.mkdtemp()
    >>> model = Pipeline(stages=[SQLTransformer(statement="SELECT * FROM __THIS__")]).fit(spark.range(1))
    >>> saved = save_model(model, folder + "/transform")
    >>> saved == folder + "/transform", sorted(os.listdir(saved))
    (True, ['metadata', 'stages'])
    >>> shutil.rmtree(folder)
    """
    model.write().overwrite().save(folder)
    remember_model(folder, model)  # a later stage of this run uses it instead of loading it back
    return folder


# Distributions whose versions decide whether a saved model loads and scores the same way.
LIBRARIES = ("seglake", "pyspark", "delta-spark", "numpy", "pandas", "pyarrow", "scikit-learn",
             "xgboost-cpu", "xgboost")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a run's models depend on, and Python's (for manifests).

    Examples
    --------
    >>> import pyspark
    >>> versions = library_versions()
    >>> versions["pyspark"] == pyspark.__version__, "python" in versions
    (True, True)
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # xgboost ships as xgboost-cpu or xgboost: record the one present
            continue
    return found


def load_model(spark: SparkSession, folder: str, name: str, model_class, manifest: str = MANIFEST,
               produced_by: str = "sweep"):
    """Load the MLlib model folder ``name`` with ``model_class.load`` after checking its checksum.

    Raises
    ------
    SeglakeError
        No such artefact (naming the stage that writes it), or its checksum differs.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pyspark.ml import Pipeline, PipelineModel
    >>> from pyspark.ml.feature import SQLTransformer
    >>> folder = tempfile.mkdtemp()
    >>> double = SQLTransformer(statement="SELECT id * 2 AS x FROM __THIS__")
    >>> model = Pipeline(stages=[double]).fit(spark.range(1))
    >>> _ = save_model(model, folder + "/transform")
    >>> _ = write_manifest(spark, folder, {}, saved=("transform",))
    >>> load_model(spark, folder, "transform", PipelineModel).transform(spark.range(3)).collect()
    [Row(x=0), Row(x=2), Row(x=4)]
    >>> load_model(spark, folder, "kmeans", PipelineModel, produced_by="segment")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: no model at .../kmeans: run the segment stage first
    >>> shutil.rmtree(folder)
    """
    if not path_exists(spark, f"{folder}/{name}"):
        raise SeglakeError(f"no model at {folder}/{name}: run the {produced_by} stage first")
    path = verify_saved(spark, folder, name, manifest)
    handed_on = remembered_model(path, model_class)  # saved by an earlier stage of this run
    return handed_on if handed_on is not None else model_class.load(path)
