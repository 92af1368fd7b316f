"""A trained run's segmenter without Spark: the transform, KMeans and density surrogates as numpy
and XGBoost, answering per row what ``seglake score`` answers for entity rows.

This file is self-contained on purpose: it imports numpy, pandas, XGBoost and (for the MLflow
wrapper at the bottom) MLflow, never pyspark and never the rest of seglake (whose package imports
pyspark). MLflow saves it as the model's code ("models from code"), so a served model is this file
plus the files :meth:`Segmenter.save` writes, and loading it in a fresh process starts no JVM and
imports no Spark. :mod:`seglake.serving.export` builds a :class:`Segmenter` from a run on the
training side, with Spark.

The steps reproduce the saved Spark ML transform and models exactly:

1. typing (``seglake.segmentation.features.prepare_entities``): each feature as a double, null
   when it does not parse or is NaN or infinite; each categorical as trimmed text (``TRUE`` /
   ``False`` read as ``true`` / ``false``);
2. ``SQLTransformer``: signed ``log1p`` (``sign(x) * log1p(|x|)``) for the logged features;
3. ``Imputer(strategy="median")``: a null becomes the training median (after log1p);
4. ``StringIndexer(handleInvalid="keep")`` + ``OneHotEncoder``: a category's index in the training
   labels, an unseen or null category the extra "keep" index; with ``dropLast`` (the default) that
   last index is the all-zero vector;
5. ``VectorAssembler`` then ``StandardScaler`` (``(x - mean) / std``, 0 where ``std`` is 0),
   ``MinMaxScaler`` (``(x - min) / (max - min)`` into ``[min, max]``, the middle where a feature was
   constant) or nothing;
6. KMeans: the nearest center (``segment``) and the Euclidean distance to it (``distance``);
7. the density surrogate of the row's group (0, or its segment when ``density.group_by:
   segment``) on the raw typed features as float32: ``cluster``, ``cluster_probability``.

Every step is per row, so a row gets the same answer alone and in any batch.

File layout (one folder)::

    segmenter.json      the manifest: {"files": {name: sha256}, "details": {...}, "written_at": ...}
    arrays.npz          centers and scaler vectors (numpy, no pickle)
    surrogate-<g>.json  XGBoost JSON of density group g
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = 1
MANIFEST = "segmenter.json"
ARRAYS = "arrays.npz"
NOISE = -1
ENTITY_ID = "entity_id"
OUTPUT_COLUMNS = ["segment", "distance", "cluster", "cluster_probability", "segment_name",
                  "cluster_name", "in_training_filter"]


class SegmenterError(ValueError):
    """A request or a model folder the segmenter cannot use; the message is one complete line.

    (Not :class:`seglake.core.errors.SeglakeError`: this file ships alone, without seglake.)
    """


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def numbers(column: pd.Series) -> np.ndarray:
    """A feature column as float64 with NaN for null, unparseable, NaN or infinite values.

    Like Spark's ``try_cast(x AS DOUBLE)`` then the features stage's "usable" rule: text is trimmed
    and parsed, booleans count 1 and 0.

    Examples
    --------
    >>> numbers(pd.Series(["3", " 4.5 ", "n/a", None, "inf"])).tolist()
    [3.0, 4.5, nan, nan, nan]
    >>> numbers(pd.Series([1, 2, None])).tolist(), numbers(pd.Series([True, False])).tolist()
    ([1.0, 2.0, nan], [1.0, 0.0])
    """
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.fromiter((_number(v) for v in column), dtype=np.float64, count=len(column))
    return np.where(np.isfinite(values), values, np.nan)


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if not text or "_" in text:  # Python reads "1_000", Spark does not
            return math.nan
        try:
            return float(text)
        except ValueError:
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def categories(column: pd.Series, boolean: bool) -> list[str | None]:
    """A categorical column as the text Spark indexes: trimmed, ``TRUE``/``False`` lower-cased.

    Examples
    --------
    >>> categories(pd.Series([" fr ", "TRUE", None, True, 3]), boolean=False)
    ['fr', 'true', None, 'true', '3']
    """
    found: list[str | None] = []
    for value in column:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            found.append(None)
            continue
        text = ("true" if value else "false") if isinstance(value, (bool, np.bool_)) else str(value).strip()
        if not boolean and text.lower() in ("true", "false"):
            text = text.lower()
        found.append(text)
    return found


@dataclass
class Segmenter:
    """A run's fitted transform, KMeans centers and density surrogates, in numpy and XGBoost.

    Build one with :func:`seglake.serving.export.export_segmenter` (Spark) or :meth:`load` (no
    Spark); :meth:`predict` labels entity rows.

    Parameters
    ----------
    details : dict
        JSON-serialisable description: ``run_id``, ``features``, ``categorical``,
        ``feature_types``, ``logged`` (features through signed log1p), ``medians`` (per feature,
        after log1p), ``categories`` (per categorical: ``labels``, ``size``, ``drop_last``),
        ``scaling`` (``standard`` with ``with_mean``/``with_std``, ``minmax`` with ``min``/``max``,
        or ``none``), ``filter`` (``min``/``max`` bounds), ``density`` (None, or ``group_by``,
        ``features`` and ``groups``: group → classes), ``names`` (``segment``/``cluster`` → id →
        the explain stage's short name; the noise cluster -1 is "unclustered"), optionally
        ``descriptions`` (the same keys → its sentence) and ``manifest`` (the run's manifest details).
    centers : ndarray
        KMeans centers, k × d in the transformed space.
    scale : dict of ndarray
        ``mean`` and ``std`` (standard) or ``original_min`` and ``original_max`` (minmax).
    surrogates : dict
        group → XGBoost JSON bytes (None for a group whose sample had a single label).
    threads : int
        XGBoost threads per prediction (1: a server answers many small requests at once).
    children : dict
        The child surrogates of a density run with ``depth`` above 1: file → XGBoost JSON bytes,
        the files ``density["levels"]`` (level → parent path → ``file``, ``classes``) names.

    Examples
    --------
    One feature, logged and standard-scaled, two centers, no density stage:

    >>> segmenter = Segmenter(
    ...     {"run_id": "r1", "features": ["likes"], "categorical": [], "feature_types": {},
    ...      "logged": ["likes"], "medians": {"likes": 1.5}, "categories": {},
    ...      "scaling": {"kind": "standard", "with_mean": True, "with_std": True},
    ...      "filter": {"min": {"likes": 2}, "max": {}}, "density": None, "names": {}},
    ...     centers=np.array([[-1.0], [1.0]]), scale={"mean": np.array([1.0]), "std": np.array([2.0])})
    >>> labelled = segmenter.predict(pd.DataFrame({"entity_id": ["a", "b", "c"],
    ...                                            "likes": [0.0, 100.0, None]}))
    >>> labelled[["entity_id", "segment", "distance", "cluster", "in_training_filter"]].round(3)
      entity_id  segment  distance  cluster  in_training_filter
    0         a        0     0.500     <NA>               False
    1         b        1     0.808     <NA>                True
    2         c        1     0.750     <NA>               False

    ``a``: log1p(0) = 0, scaled (0 - 1) / 2 = -0.5, 0.5 from center -1; ``c`` (null) takes the
    median 1.5, scaled 0.25, 0.75 from center 1; the filter keeps ``likes >= 2`` (null fails).
    """

    details: dict[str, Any]
    centers: np.ndarray
    scale: dict[str, np.ndarray] = field(default_factory=dict)
    surrogates: dict[int, bytes | None] = field(default_factory=dict)
    threads: int = 1
    children: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.centers = np.asarray(self.centers, dtype=np.float64)
        self._boosters = _boosters(self.details, self.surrogates, self.threads)
        self._children = {name: _booster(raw, self.threads) for name, raw in self.children.items()}
        self._labels = {c: {label: i for i, label in enumerate(spec["labels"])}
                        for c, spec in self.details["categories"].items()}
        self._medians = np.array([self.details["medians"][f] for f in self.features], dtype=np.float64)
        self._logged = np.array([f in set(self.details["logged"]) for f in self.features])
        self._center_norms = (self.centers ** 2).sum(axis=1)

    # ------------------------------------------------------------ what it reads

    @property
    def run_id(self) -> str:
        return str(self.details["run_id"])

    @property
    def features(self) -> list[str]:
        return list(self.details["features"])

    @property
    def categorical(self) -> list[str]:
        return list(self.details["categorical"])

    @property
    def columns(self) -> list[str]:
        """Every input column :meth:`predict` needs (features then categoricals)."""
        return self.features + self.categorical

    # ------------------------------------------------------------ the steps

    def typed(self, rows: pd.DataFrame) -> tuple[np.ndarray, dict[str, list[str | None]]]:
        """Raw features (rows × features, float64, NaN for null) and categoricals as text."""
        missing = [c for c in self.columns if c not in rows.columns]
        if missing:
            raise SegmenterError(f"input has no column(s) {', '.join(map(repr, missing))}: model run "
                                 f"{self.run_id} needs {', '.join(self.columns)}")
        raw = np.column_stack([numbers(rows[f]) for f in self.features]) if len(rows) else \
            np.empty((0, len(self.features)))
        types = self.details.get("feature_types", {})
        text = {c: categories(rows[c], types.get(c) == "boolean") for c in self.categorical}
        return raw, text

    def transform(self, raw: np.ndarray, text: dict[str, list[str | None]]) -> np.ndarray:
        """The clustering space of typed rows: log1p, median imputation, one-hot, scaling."""
        values = np.where(self._logged, np.sign(raw) * np.log1p(np.abs(raw)), raw)
        values = np.where(np.isnan(values), self._medians, values)
        blocks = [values]
        for column in self.categorical:
            spec = self.details["categories"][column]
            width = spec["size"] - 1 if spec["drop_last"] else spec["size"]
            index = np.array([self._labels[column].get(v, len(spec["labels"])) if v is not None
                              else len(spec["labels"]) for v in text[column]], dtype=np.int64)
            encoded = np.zeros((len(index), width))
            inside = index < width
            encoded[np.flatnonzero(inside), index[inside]] = 1.0
            blocks.append(encoded)
        assembled = np.hstack(blocks) if len(blocks) > 1 else values
        scaling = self.details["scaling"]
        if scaling["kind"] == "standard":
            if scaling["with_mean"]:
                assembled = assembled - self.scale["mean"]
            if scaling["with_std"]:
                std = self.scale["std"]
                assembled = assembled * np.where(std != 0, 1.0 / np.where(std != 0, std, 1.0), 0.0)
        elif scaling["kind"] == "minmax":
            low, high = self.scale["original_min"], self.scale["original_max"]
            spread = high - low
            factor = np.where(spread != 0, (scaling["max"] - scaling["min"]) / np.where(spread != 0, spread, 1.0), 0.0)
            assembled = np.where(factor != 0, (assembled - low) * factor + scaling["min"],
                                 (scaling["min"] + scaling["max"]) / 2)
        return assembled

    def segments(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest center of each point and the Euclidean distance to it."""
        squared = self._center_norms[None, :] - 2.0 * points @ self.centers.T
        segment = squared.argmin(axis=1)
        distance = np.sqrt(((points - self.centers[segment]) ** 2).sum(axis=1))
        return segment.astype(np.int32), distance

    def _surrogate_values(self, raw: np.ndarray) -> np.ndarray:
        position = {f: i for i, f in enumerate(self.features)}
        return np.ascontiguousarray(raw[:, [position[f] for f in self.details["density"]["features"]]],
                                    dtype=np.float32)

    def clusters(self, raw: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Surrogate cluster and probability per row (float32 features, like the Spark UDF)."""
        density = self.details["density"]
        groups = segment if density["group_by"] == "segment" else np.zeros(len(segment), dtype=np.int32)
        values = self._surrogate_values(raw)
        cluster = np.full(len(groups), NOISE, dtype=np.int32)
        probability = np.zeros(len(groups))
        for group in np.unique(groups):
            booster, classes = self._boosters.get(int(group), (None, np.array([NOISE], dtype=np.int32)))
            rows = groups == group
            if booster is None:
                cluster[rows] = classes[0]
                probability[rows] = 1.0 if int(group) in self._boosters else 0.0
                continue
            scores = booster.inplace_predict(values if rows.all() else values[rows])
            best = scores.argmax(axis=1)
            cluster[rows] = classes[best]
            probability[rows] = scores[np.arange(len(best)), best]
        return cluster, probability

    def levels(self, raw: np.ndarray, cluster: np.ndarray) -> tuple[dict[int, pd.arrays.IntegerArray], list[str]]:
        """The density levels below the first (``seglake score``'s ``cluster_2`` ..): level → child
        per row (null where the row's parent was not split), and each row's ``cluster_path``.

        A row reaches a child only through its parent: at each level its path so far picks the
        parent's child surrogate in ``density["levels"]``.
        """
        density = self.details["density"]
        values = self._surrogate_values(raw)
        paths = np.array([str(c) for c in cluster.tolist()], dtype=object)
        children = {}
        for level in range(2, int(density.get("depth", 1)) + 1):
            child = np.zeros(len(paths), dtype=np.int64)
            known = np.zeros(len(paths), dtype=bool)
            for parent, spec in density.get("levels", {}).get(str(level), {}).items():
                rows = paths == parent
                if not rows.any():
                    continue
                classes = np.asarray(spec["classes"], dtype=np.int64)
                if spec["file"] is None:
                    child[rows] = classes[0]
                else:
                    child[rows] = classes[self._children[spec["file"]].inplace_predict(values[rows]).argmax(axis=1)]
                known |= rows
            children[level] = pd.array(np.where(known, child, 0), dtype="Int32")
            children[level][~known] = pd.NA
            deeper = known & (child > 0)
            paths = np.where(deeper, paths + "." + child.astype(str), paths)
        return children, paths.tolist()

    def in_filter(self, raw: np.ndarray) -> np.ndarray:
        """The training filter's verdict: every bounded feature within [min, max], null fails."""
        keep = np.ones(len(raw), dtype=bool)
        position = {f: i for i, f in enumerate(self.features)}
        for bounds, passes in ((self.details["filter"].get("min", {}), np.greater_equal),
                               (self.details["filter"].get("max", {}), np.less_equal)):
            for name, limit in bounds.items():
                with np.errstate(invalid="ignore"):
                    keep &= passes(raw[:, position[name]], float(limit))  # NaN compares False
        return keep

    def predict(self, rows: pd.DataFrame | list[dict] | dict) -> pd.DataFrame:
        """Label entity rows like ``seglake score`` does.

        Parameters
        ----------
        rows : DataFrame, list of dict or dict
            One row per entity with the model's :attr:`columns`; ``entity_id`` is passed through
            when present, other columns are ignored. Unlike ``seglake score`` nothing is
            quarantined: a null or repeated id is labelled too.

        Returns
        -------
        DataFrame
            (``entity_id``), ``segment`` (int), ``distance``, ``cluster`` (nullable int: null
            without a density stage), ``cluster_probability``, ``segment_name`` and
            ``cluster_name`` (the explain stage's names, else the id as text),
            ``in_training_filter``; same index as ``rows``.

        Raises
        ------
        SegmenterError
            A column the model needs is missing.
        """
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, pd.DataFrame):
            rows = pd.DataFrame.from_records(rows)
        raw, text = self.typed(rows)
        segment, distance = self.segments(self.transform(raw, text))
        out = pd.DataFrame(index=rows.index)
        if ENTITY_ID in rows.columns:
            out[ENTITY_ID] = rows[ENTITY_ID].to_numpy()
        out["segment"] = segment
        out["distance"] = distance
        names = self.details.get("names", {})
        segment_names = names.get("segment", {})
        out["segment_name"] = [segment_names.get(str(s), str(s)) for s in segment.tolist()]
        if self.details["density"] is None:
            out["cluster"] = pd.array([pd.NA] * len(rows), dtype="Int32")
            out["cluster_probability"] = np.full(len(rows), np.nan)
            out["cluster_name"] = None
        else:
            cluster, probability = self.clusters(raw, segment)
            cluster_names = names.get("cluster", {})
            out["cluster"] = pd.array(cluster, dtype="Int32")
            out["cluster_probability"] = probability
            out["cluster_name"] = [cluster_names.get(str(c), str(c)) for c in cluster.tolist()]
        out["in_training_filter"] = self.in_filter(raw)
        levels = []
        if self.details["density"] is not None and int(self.details["density"].get("depth", 1)) > 1:
            children, paths = self.levels(raw, cluster)
            out["cluster_path"] = paths
            for level, child in children.items():
                out[f"cluster_{level}"] = child
            path_names = names.get("cluster_path", {})
            out["cluster_path_name"] = [path_names.get(p, cluster_names.get(p, p)) for p in paths]
            levels = ["cluster_path", *(f"cluster_{level}" for level in children), "cluster_path_name"]
        return out[[ENTITY_ID] * (ENTITY_ID in out.columns) + OUTPUT_COLUMNS + levels]

    # ------------------------------------------------------------ files

    def input_example(self) -> pd.DataFrame:
        """One typical row: each feature at its training median (in raw units), each categorical
        at its most frequent training label."""
        row: dict[str, Any] = {}
        for name in self.features:
            median = float(self.details["medians"][name])
            row[name] = float(np.sign(median) * np.expm1(abs(median))) if name in self.details["logged"] \
                else median
        for name in self.categorical:
            labels = self.details["categories"][name]["labels"]
            row[name] = labels[0] if labels else None
        return pd.DataFrame([row])

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the segmenter into ``folder`` (created); returns the manifest written.

        Examples
        --------
        >>> import tempfile
        >>> segmenter = Segmenter({"run_id": "r1", "features": ["x"], "categorical": [], "logged": [],
        ...     "medians": {"x": 0.0}, "categories": {}, "scaling": {"kind": "none"}, "filter": {},
        ...     "density": None, "names": {}}, centers=np.array([[0.0], [5.0]]))
        >>> folder = tempfile.mkdtemp()
        >>> sorted(segmenter.save(folder)["files"])
        ['arrays.npz']
        >>> Segmenter.load(folder).predict({"x": 4.0})[["segment", "distance"]].to_dict("records")
        [{'segment': 1, 'distance': 1.0}]
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = io.BytesIO()
        np.savez(arrays, centers=self.centers, **{f"scale_{k}": np.asarray(v, dtype=np.float64)
                                                  for k, v in self.scale.items()})
        files = {ARRAYS: arrays.getvalue()}
        for group, raw in sorted(self.surrogates.items()):
            if raw is not None:
                files[f"surrogate-{group}.json"] = bytes(raw)
        files.update({name: bytes(raw) for name, raw in sorted(self.children.items())})
        for name, data in files.items():
            (folder / name).write_bytes(data)
        body = {"files": {name: _sha256(data) for name, data in sorted(files.items())},
                "details": {**self.details, "format": FORMAT},
                "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (folder / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True))
        return body

    @classmethod
    def load(cls, folder: str | Path, threads: int = 1) -> Segmenter:
        """Read a folder written by :meth:`save`, refusing any file whose sha256 differs.

        Raises
        ------
        SegmenterError
            No manifest, an unknown format, or a file missing or changed since it was written.
        """
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise SegmenterError(f"no segmenter at {folder}: {MANIFEST} is missing")
        body = json.loads(path.read_text())
        details = body.get("details", {})
        if details.get("format") != FORMAT:
            raise SegmenterError(f"{path} has format {details.get('format')!r}; this seglake reads "
                                 f"format {FORMAT}: export the run's segmenter again")
        data = {}
        for name, digest in body["files"].items():
            file = folder / name
            if not file.is_file():
                raise SegmenterError(f"{file} is listed in {MANIFEST} but missing")
            data[name] = file.read_bytes()
            if _sha256(data[name]) != digest:
                raise SegmenterError(f"{file} does not match its sha256 in {MANIFEST}: refusing to load it")
        with np.load(io.BytesIO(data[ARRAYS]), allow_pickle=False) as arrays:
            centers = arrays["centers"]
            scale = {k.removeprefix("scale_"): arrays[k] for k in arrays.files if k.startswith("scale_")}
        surrogates: dict[int, bytes | None] = {}
        children: dict[str, bytes] = {}
        if details.get("density") is not None:
            for group in details["density"]["groups"]:
                surrogates[int(group)] = data.get(f"surrogate-{group}.json")
            for parents in details["density"].get("levels", {}).values():
                children.update({spec["file"]: data[spec["file"]] for spec in parents.values() if spec["file"]})
        return cls(details, centers, scale, surrogates, threads, children)


def _boosters(details: dict[str, Any], surrogates: dict[int, bytes | None],
              threads: int) -> dict[int, tuple[Any, np.ndarray]]:
    """group → (Booster or None, classes): a group whose sample had one label has no booster."""
    if details.get("density") is None:
        return {}
    import xgboost as xgb

    loaded = {}
    for group, classes in details["density"]["groups"].items():
        raw = surrogates.get(int(group))
        loaded[int(group)] = (None if raw is None else _booster(raw, threads), np.asarray(classes, dtype=np.int32))
    return loaded


def _booster(raw: bytes, threads: int):
    import xgboost as xgb

    booster = xgb.Booster(model_file=bytearray(raw))
    booster.set_param({"nthread": threads})
    return booster


# ---------------------------------------------------------------- the MLflow pyfunc

import mlflow.models
import mlflow.pyfunc


class SegmenterModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a :class:`Segmenter`: artifact ``segmenter`` is its folder.

    Saved as code (:func:`seglake.serving.export.save_pyfunc`), so loading unpickles nothing.
    """

    def load_context(self, context) -> None:
        self.segmenter = Segmenter.load(context.artifacts["segmenter"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.segmenter.predict(model_input)


# MLflow runs this file as the model's code under a generated module name and takes the model
# set here; imported as part of seglake, it sets nothing (no stale model for another code model).
if __name__ != "seglake.serving.segmenter":
    mlflow.models.set_model(SegmenterModel())
