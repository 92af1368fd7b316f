"""Export a trained run's segmenter (training side, with Spark) and save it as an MLflow pyfunc.

:func:`export_segmenter` reads the run's saved transform, clustering model and density surrogates
(each checked against its sha256 by :func:`seglake.segmentation.score.load_scoring_model`, the
loader ``seglake score`` uses) and the explain stage's names and descriptions, and turns them into a
:class:`~seglake.serving.segmenter.Segmenter`: plain numbers read off the fitted MLlib stages.
:func:`save_pyfunc` saves it as an MLflow model whose code is ``segmenter.py`` alone, and
:func:`save_run_segmenter` (called by the runner after the segment, density and explain stages)
writes that model to ``models/<run_id>/segmenter/`` with a sha256 manifest
(``manifest-segmenter.json``), so it exists whether or not the run is tracked.
"""

from __future__ import annotations

import importlib.resources
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml.feature import (
    ImputerModel,
    MinMaxScalerModel,
    OneHotEncoderModel,
    SQLTransformer,
    StandardScalerModel,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.sql import SparkSession

from seglake.core.artifacts import write_manifest
from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.tables import Tables, read_run
from seglake.segmentation.names import NOISE_NAME, SUBCLUSTER
from seglake.segmentation.score import load_scoring_model
from seglake.segmentation.surrogate import NOISE
from seglake.serving import segmenter as segmenter_module
from seglake.serving.segmenter import ENTITY_ID, Segmenter, numbers  # noqa: F401 (numbers: see signature)

PYFUNC = "segmenter"                       # models/<run_id>/segmenter: the MLflow model folder
SEGMENTER_MANIFEST = "manifest-segmenter.json"
CODE = Path(segmenter_module.__file__)     # the model's code: the self-contained segmenter file
# What a served model needs installed (pinned like pyproject.toml; no pyspark).
REQUIREMENTS = ["numpy==2.2.6", "pandas==2.3.3", "xgboost-cpu==3.0.5", "mlflow-skinny==3.17.2"]


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _numeric_steps(statement: str, features: list[str], where: str) -> list[str]:
    """The features the SQLTransformer logs, read off its statement (prepare's two expressions).

    Examples
    --------
    >>> statement = ("SELECT *, CAST(SIGN(`a`) * LOG1P(ABS(`a`)) AS DOUBLE) AS `__num__a`, "
    ...              "CAST(`b` AS DOUBLE) AS `__num__b` FROM __THIS__")
    >>> _numeric_steps(statement, ["a", "b"], "models/r1/transform")
    ['a']
    >>> _numeric_steps(statement, ["c"], "models/r1/transform")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: models/r1/transform: feature 'c' has no expression ...
    """
    logged = []
    for name in features:
        column, output = _quoted(name), _quoted(f"__num__{name}")
        if f"CAST(SIGN({column}) * LOG1P(ABS({column})) AS DOUBLE) AS {output}" in statement:
            logged.append(name)
        elif f"CAST({column} AS DOUBLE) AS {output}" not in statement:
            raise SeglakeError(f"{where}: feature '{name}' has no expression the segmenter knows in "
                               f"its SQLTransformer (signed log1p or a cast): re-run the sweep stage")
    return logged


def transform_details(transform, features: list[str], categorical: list[str],
                      where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The fitted transform's numbers: logged features, medians, categories, scaling.

    Parameters
    ----------
    transform : PipelineModel
        As :func:`seglake.segmentation.prepare.fit_transform_pipeline` fits it.
    features, categorical : list of str
    where : str
        Names the model in errors.

    Returns
    -------
    details : dict
        ``logged``, ``medians``, ``categories`` and ``scaling`` for :class:`Segmenter`.
    scale : dict of ndarray
        ``mean``/``std`` or ``original_min``/``original_max``.

    Raises
    ------
    SeglakeError
        A stage the segmenter cannot reproduce, or columns in another order than it assumes.

    Examples
    --------
    >>> from seglake.core.config import TransformConfig
    >>> from seglake.segmentation.prepare import fit_transform_pipeline
    >>> kept = spark.createDataFrame([(1.0, "fr"), (3.0, "de"), (None, "fr")], "plays double, country string")
    >>> model = fit_transform_pipeline(kept, ["plays"], ["country"], TransformConfig(scaling="minmax"))
    >>> details, scale = transform_details(model, ["plays"], ["country"], "transform")
    >>> details["logged"], details["categories"], details["scaling"]["kind"]
    (['plays'], {'country': {'labels': ['fr', 'de'], 'size': 3, 'drop_last': True}}, 'minmax')
    >>> round(details["medians"]["plays"], 3), scale["original_max"].round(3).tolist()
    (0.693, [1.386, 1.0, 1.0])
    """
    details: dict[str, Any] = {"logged": [], "medians": {}, "categories": {}, "scaling": {"kind": "none"}}
    scale: dict[str, np.ndarray] = {}
    labels: dict[str, list[str]] = {}
    assembled: list[str] = []
    for stage in transform.stages:
        if isinstance(stage, SQLTransformer):
            details["logged"] = _numeric_steps(stage.getStatement(), features, where)
        elif isinstance(stage, ImputerModel):
            if stage.getStrategy() != "median":
                raise SeglakeError(f"{where}: Imputer strategy {stage.getStrategy()} (expected median)")
            row = stage.surrogateDF.first()
            details["medians"] = {f: float(row[f"__num__{f}"]) for f in features}
        elif isinstance(stage, StringIndexerModel):
            if stage.getHandleInvalid() != "keep" or stage.getStringOrderType() != "frequencyDesc":
                raise SeglakeError(f"{where}: StringIndexer handleInvalid={stage.getHandleInvalid()}, "
                                   f"stringOrderType={stage.getStringOrderType()} (expected keep, "
                                   f"frequencyDesc)")
            for column, found in zip(stage.getInputCols(), stage.labelsArray):
                labels[column.removeprefix("__cat__")] = list(found)
        elif isinstance(stage, OneHotEncoderModel):
            for column, size in zip(stage.getInputCols(), stage.categorySizes):
                name = column.removeprefix("__idx__")
                details["categories"][name] = {"labels": labels[name], "size": int(size),
                                               "drop_last": bool(stage.getDropLast())}
        elif isinstance(stage, VectorAssembler):
            assembled = stage.getInputCols()
        elif isinstance(stage, StandardScalerModel):
            details["scaling"] = {"kind": "standard", "with_mean": bool(stage.getWithMean()),
                                  "with_std": bool(stage.getWithStd())}
            scale = {"mean": stage.mean.toArray(), "std": stage.std.toArray()}
        elif isinstance(stage, MinMaxScalerModel):
            details["scaling"] = {"kind": "minmax", "min": float(stage.getMin()), "max": float(stage.getMax())}
            scale = {"original_min": stage.originalMin.toArray(), "original_max": stage.originalMax.toArray()}
        else:
            raise SeglakeError(f"{where}: stage {type(stage).__name__} is not one the segmenter reproduces")
    expected = [f"__imp__{f}" for f in features] + [f"__ohe__{c}" for c in categorical]
    if assembled != expected or set(details["categories"]) != set(categorical) or \
            set(details["medians"]) != set(features):
        raise SeglakeError(f"{where}: the transform's columns ({', '.join(assembled)}) are not the "
                           f"features and categoricals of its manifest: re-run the sweep stage")
    return details, scale


def _names(spark: SparkSession, tables: Tables, run_id: str,
           density: bool) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """kind (segment, cluster; ``cluster_path`` for the children of density splits) → id → name, and
    → description, from ``gold/descriptions`` (empty without; a run explained before names existed
    has descriptions only). With a density stage the
    noise cluster is named :data:`~seglake.segmentation.names.NOISE_NAME`."""
    rows = read_run(spark, tables.gold("descriptions"), run_id)
    names: dict[str, dict[str, str]] = {"cluster": {str(NOISE): NOISE_NAME}} if density else {}
    descriptions: dict[str, dict[str, str]] = {}
    if rows is not None:
        named, paths = "name" in rows.columns, "path" in rows.columns
        for row in rows.select("kind", "target", "description", *["name"] * named, *["path"] * paths).collect():
            # a child of a kept density split is keyed by its path, under "cluster_path"
            kind, key = ("cluster_path", row["path"]) if row["kind"] == SUBCLUSTER else (row["kind"], str(row["target"]))
            descriptions.setdefault(kind, {})[key] = row["description"]
            if named and row["name"] is not None:
                names.setdefault(kind, {})[key] = row["name"]
    return names, descriptions


def export_segmenter(spark: SparkSession, tables: Tables, run_id: str) -> Segmenter:
    """The Spark-free :class:`Segmenter` of a trained run.

    Raises
    ------
    SeglakeError
        The run has no sweep (naming its model folder), clusters with another algorithm than
        KMeans, or its transform has a stage the segmenter cannot reproduce.
    """
    model = load_scoring_model(spark, tables, run_id)
    folder = tables.models(run_id)
    algorithm = model.manifest["clustering"]["algorithm"]
    if algorithm != "kmeans":
        raise SeglakeError(f"model run {run_id} clusters with {algorithm} ({folder}/manifest.json): "
                           f"the Spark-free segmenter serves kmeans runs only")
    details, scale = transform_details(model.transform, model.features, model.categorical,
                                       f"{folder}/transform")
    density = None
    surrogates: dict[int, bytes | None] = {}
    if model.surrogates is not None:
        missing = [f for f in model.surrogate_features if f not in model.features]
        if missing:
            raise SeglakeError(f"{folder}/manifest-density.json: surrogate features "
                               f"{', '.join(missing)} are not features of the sweep")
        density = {"group_by": model.group_by, "features": model.surrogate_features,
                   "groups": {str(g): [int(c) for c in classes]
                              for g, (_, classes) in sorted(model.surrogates.items())},
                   "depth": model.depth, "levels": model.levels}
        surrogates = {g: raw for g, (raw, _) in model.surrogates.items()}
    details.update({
        "run_id": run_id, "use_case": model.manifest.get("use_case"),
        "features": model.features, "categorical": model.categorical,
        "feature_types": model.manifest.get("feature_types", {}),
        "filter": model.manifest["filter"], "density": density,
        "manifest": model.manifest,
    })
    details["names"], details["descriptions"] = _names(spark, tables, run_id, density is not None)
    return Segmenter(details, np.asarray(model.centers, dtype=np.float64), scale, surrogates,
                     children=dict(model.level_models))


def signature(segmenter: Segmenter):
    """The MLflow signature: the model's feature and categorical columns in, labels out.

    Input columns are required but typed ``Any``: like ``seglake score``, the segmenter takes a
    feature as an integer, a double or text that parses as a number (MLflow's ``double`` would
    refuse the int64 counts entity rows hold), and types it itself (:func:`numbers`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = ([ColSpec("string", ENTITY_ID, required=False)]
              + [ColSpec(AnyType(), name) for name in segmenter.columns])
    outputs = [ColSpec("string", ENTITY_ID, required=False), ColSpec("integer", "segment"),
               ColSpec("double", "distance"), ColSpec("integer", "cluster", required=False),
               ColSpec("double", "cluster_probability", required=False),
               ColSpec("string", "segment_name"), ColSpec("string", "cluster_name", required=False),
               ColSpec("boolean", "in_training_filter")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def save_pyfunc(segmenter: Segmenter, path: str | Path) -> Path:
    """Save ``segmenter`` as an MLflow pyfunc model at local ``path`` (which must not exist).

    The model's code is ``segmenter.py`` (no pickle); its artifact ``segmenter`` is the folder
    :meth:`Segmenter.save` writes; the signature and a one-row input example go in ``MLmodel``.
    """
    import mlflow.pyfunc

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch) / "segmenter"
        segmenter.save(files)
        # MLflow reads the model's code from a file on disk; under spark-submit the package is a
        # zip on the Python path (--py-files), so the code is copied out through its loader first
        code = Path(scratch) / CODE.name
        code.write_text(importlib.resources.files(segmenter_module.__package__).joinpath(CODE.name)
                        .read_text(encoding="utf-8"), encoding="utf-8")
        mlflow.pyfunc.save_model(str(path), python_model=str(code), artifacts={"segmenter": str(files)},
                                 signature=signature(segmenter), input_example=segmenter.input_example(),
                                 pip_requirements=REQUIREMENTS)
    return path


def save_run_segmenter(spark: SparkSession, config: SeglakeConfig, run_id: str) -> str:
    """Export run ``run_id``'s segmenter as a pyfunc into ``models/<run_id>/segmenter``.

    Every file goes through :func:`seglake.core.artifacts.write_manifest` (local folder or Hadoop
    URI), listed with its sha256 in ``models/<run_id>/manifest-segmenter.json``.

    Returns
    -------
    str
        The model folder.
    """
    tables = Tables.of(config)
    segmenter = export_segmenter(spark, tables, run_id)
    folder = tables.models(run_id)
    with tempfile.TemporaryDirectory() as scratch:
        saved = save_pyfunc(segmenter, Path(scratch) / PYFUNC)
        files = {f"{PYFUNC}/{p.relative_to(saved).as_posix()}": p.read_bytes()
                 for p in sorted(saved.rglob("*")) if p.is_file()}
    local = Path(folder) if "://" not in folder and not folder.startswith("file:") else None
    if local is not None and (local / PYFUNC).is_dir():
        import shutil

        shutil.rmtree(local / PYFUNC)  # no file of an earlier export left beside the new one
    write_manifest(spark, folder, {"run_id": run_id, "k": int(segmenter.centers.shape[0]),
                                   "density": segmenter.details["density"] is not None,
                                   "features": segmenter.features,
                                   "categorical": segmenter.categorical},
                   files=files, manifest=SEGMENTER_MANIFEST)
    return f"{folder}/{PYFUNC}"
