"""Typed configuration: one YAML per use case, validated once at the edge into pydantic models.

Relative paths in a config (``lakehouse``, ``events.path``, ``entities.path``) are resolved against
the folder of the config file, so a config means the same thing from any working directory.
``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the environment first.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seglake.core.errors import SeglakeError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_()\-]*$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
ColumnType = Literal["long", "int", "double", "string", "boolean", "timestamp"]

DOUYIN_COLUMNS: dict[str, str] = {
    "uid": "long", "user_city": "long", "item_id": "long", "author_id": "long",
    "item_city": "long", "channel": "long", "finish": "long", "like": "long",
    "music_id": "long", "device": "long", "time": "long", "duration_time": "long",
}


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"'{name}' is not a plain column name (letters, digits, _ ( ) -)")
    return name


class SparkSettings(Strict):
    """Where Spark runs; spark-submit flags win over these."""

    master: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class EventRules(Strict):
    """Value rules for raw events; a row that breaks one goes to quarantine with the reason."""

    not_null: list[str] = Field(default_factory=lambda: ["uid", "item_id", "author_id"])
    non_negative: list[str] = Field(default_factory=lambda: ["duration_time", "time"])
    allowed_values: dict[str, list[int]] = Field(
        default_factory=lambda: {"finish": [0, 1], "like": [0, 1]}
    )
    dedupe: bool = True


class EventsSource(Strict):
    """Raw interaction logs (CSV, JSON lines or Parquet) ingested to ``bronze/events``."""

    path: str
    format: Literal["csv", "json", "parquet"] = "parquet"
    columns: dict[str, ColumnType] = Field(default_factory=lambda: dict(DOUYIN_COLUMNS))
    options: dict[str, str] = Field(default_factory=dict)
    rules: EventRules = Field(default_factory=EventRules)

    @field_validator("columns")
    @classmethod
    def _names(cls, columns: dict[str, str]) -> dict[str, str]:
        for name in columns:
            _check_identifier(name)
        return columns

    @model_validator(mode="after")
    def _rules_name_columns(self) -> "EventsSource":
        known = set(self.columns)
        named = [*self.rules.not_null, *self.rules.non_negative, *self.rules.allowed_values]
        unknown = [c for c in named if c not in known]
        if unknown:
            raise ValueError(f"rules name columns not in events.columns: {', '.join(unknown)}")
        return self


class EntitiesSource(Strict):
    """A ready table with one row per entity (CSV with quoted multi-line fields, Parquet or Delta)."""

    path: str
    format: Literal["csv", "parquet", "delta"] = "csv"
    id: str
    features: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("features", "categorical")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return [_check_identifier(n) for n in names]


AggName = Literal["count", "sum", "mean", "min", "max", "count_distinct", "ratio", "active_days"]


class FeatureDef(Strict):
    """One per-entity aggregation over ``bronze/events``."""

    agg: AggName
    column: str | None = None
    numerator: str | None = None
    denominator: str | None = None

    @model_validator(mode="after")
    def _operands(self) -> "FeatureDef":
        if self.agg == "ratio":
            if not (self.numerator and self.denominator):
                raise ValueError("agg 'ratio' needs numerator and denominator (feature names)")
        elif self.agg != "count" and not self.column:
            raise ValueError(f"agg '{self.agg}' needs a column")
        if self.column:
            _check_identifier(self.column)
        return self


class FeaturesConfig(Strict):
    """Per-entity features aggregated from events into ``silver/entities``."""

    entity: str = "uid"
    definitions: dict[str, FeatureDef] = Field(default_factory=dict)
    approximate_distinct: bool = False
    # HLL++ sketch size grows as 1/rsd**2: at 0.01 the sketches cost more than exact counting
    # (bench/bench_features.py); 0.05 is Spark's own default.
    approximate_rsd: float = Field(0.05, gt=0.0, lt=0.4)

    @field_validator("definitions")
    @classmethod
    def _names(cls, definitions: dict[str, FeatureDef]) -> dict[str, FeatureDef]:
        for name, spec in definitions.items():
            _check_identifier(name)
            for ref in (spec.numerator, spec.denominator):
                if ref and ref not in definitions:
                    raise ValueError(f"feature '{name}' refers to unknown feature '{ref}'")
        return definitions


class FilterConfig(Strict):
    """Keep entities whose features are within these bounds (inclusive)."""

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


class TransformConfig(Strict):
    """log1p then scaling, fitted as a Spark ML Pipeline and saved with the run."""

    log1p: bool | list[str] = True
    scaling: Literal["standard", "minmax", "none"] = "standard"


class SweepConfig(Strict):
    """Clustering over a range of k, with the choice of k explained."""

    algorithm: Literal["kmeans", "bisecting_kmeans", "gaussian_mixture"] = "kmeans"
    k_min: int = Field(2, ge=2)
    k_max: int = Field(9, ge=2)
    k: int | None = Field(None, ge=2)
    seed: int = 0
    max_iter: int = Field(30, ge=1)
    silhouette_sample: int = Field(10_000, ge=100)
    fit_sample: int | None = Field(250_000, ge=1_000)
    min_share: float = Field(0.005, ge=0.0, lt=0.5)

    @model_validator(mode="after")
    def _range(self) -> "SweepConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) is below k_min ({self.k_min})")
        return self


class UmapConfig(Strict):
    """UMAP settings for clustering (not for pictures: the 2-D map has its own fit).

    The defaults follow umap-learn's advice for clustering: more neighbours than the default 15
    (broader structure, fewer spurious splits), ``min_dist`` 0 (points packed densely, which is what
    HDBSCAN looks for) and a few more dimensions than 2 (less tearing of clusters).
    """

    n_neighbors: int = Field(30, ge=2)
    min_dist: float = Field(0.0, ge=0.0)
    n_components: int = Field(5, ge=2)
    metric: Literal["euclidean", "manhattan", "cosine", "correlation"] = "euclidean"
    map_min_dist: float = Field(0.1, ge=0.0)
    n_epochs: int | None = Field(None, ge=10)


class HdbscanConfig(Strict):
    """HDBSCAN settings; ``min_samples`` defaults to ``min_cluster_size``."""

    min_cluster_size: int = Field(50, ge=2)
    min_samples: int | None = Field(None, ge=1)
    cluster_selection_method: Literal["eom", "leaf"] = "eom"


class DensityConfig(Strict):
    """UMAP + HDBSCAN on a bounded sample, then a surrogate classifier for everyone."""

    sample_size: int = Field(50_000, ge=100)
    group_by: Literal["none", "segment"] = "none"
    seed: int = 0
    umap: UmapConfig = Field(default_factory=UmapConfig)
    hdbscan: HdbscanConfig = Field(default_factory=HdbscanConfig)
    stability_fraction: float = Field(0.5, ge=0.0, le=1.0)
    surrogate_trees: int = Field(100, ge=1)
    surrogate_max_depth: int = Field(6, ge=1, le=16)
    surrogate_holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)


class ExplainConfig(Strict):
    """One-vs-rest XGBoost + SHAP per cluster and per segment."""

    min_cluster_size: int = Field(30, ge=2)
    sample_size: int = Field(20_000, ge=100)
    holdout_fraction: float = Field(0.25, gt=0.0, lt=0.9)
    top_features: int = Field(4, ge=1)
    seed: int = 0
    trees: int = Field(100, ge=1)
    max_depth: int = Field(4, ge=1, le=16)
    noun: str = Field("entities", min_length=1, max_length=40)


class DriftConfig(Strict):
    """Population stability of scored batches against the training entities (``seglake score``)."""

    bins: int = Field(10, ge=2, le=100)
    warn: float = Field(0.1, gt=0.0)
    flag: float = Field(0.25, gt=0.0)

    @model_validator(mode="after")
    def _order(self) -> "DriftConfig":
        if self.flag < self.warn:
            raise ValueError(f"flag ({self.flag}) is below warn ({self.warn})")
        return self


class LogisticRegressionParams(Strict):
    """Spark ML LogisticRegression settings for the claim classifier."""

    reg_param: float = Field(0.01, ge=0.0)
    elastic_net_param: float = Field(0.0, ge=0.0, le=1.0)
    max_iter: int = Field(100, ge=1)


class GbtParams(Strict):
    """Spark ML GBTClassifier settings for the claim classifier."""

    trees: int = Field(20, ge=1)
    max_depth: int = Field(5, ge=1, le=16)
    step_size: float = Field(0.1, gt=0.0, le=1.0)


class ClassifierConfig(Strict):
    """A binary classifier on one text, some categorical and some numeric columns of ``entities``."""

    label: str
    positive_class: str = Field(min_length=1)
    negative_class: str = Field(min_length=1)
    text: str
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    train_fraction: float = Field(0.6, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0
    vocab_size: int = Field(5000, ge=10)
    min_doc_freq: int = Field(2, ge=1)
    remove_stop_words: bool = False
    models: list[Literal["logistic_regression", "gbt"]] = Field(
        default_factory=lambda: ["logistic_regression", "gbt"], min_length=1
    )
    logistic_regression: LogisticRegressionParams = Field(default_factory=LogisticRegressionParams)
    gbt: GbtParams = Field(default_factory=GbtParams)

    @model_validator(mode="after")
    def _consistent(self) -> "ClassifierConfig":
        for name in (self.label, self.text, *self.categorical, *self.numeric):
            _check_identifier(name)
        inputs = [self.text, *self.categorical, *self.numeric]
        if self.label in inputs or len(set(inputs)) != len(inputs):
            raise ValueError("label, text, categorical and numeric must name distinct columns")
        if self.positive_class == self.negative_class:
            raise ValueError("positive_class and negative_class must differ")
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train/validation/test fractions must add up to 1 (they add up to {total:g})")
        return self


class AlsSettings(Strict):
    """Spark MLlib ALS on explicit ratings: user taste embeddings and their held-out error."""

    rank: int = Field(20, ge=2, le=200)
    reg_param: float = Field(0.1, ge=0.0)
    max_iter: int = Field(15, ge=1)
    seed: int = 0
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)


class AssignerSettings(Strict):
    """Multi-class XGBoost that assigns (new) users to segments from ratings + demographics."""

    holdout_fraction: float = Field(0.3, gt=0.0, lt=0.9)
    seed: int = 0
    trees: int = Field(200, ge=1)
    max_depth: int = Field(4, ge=1, le=16)
    learning_rate: float = Field(0.1, gt=0.0, le=1.0)


class RatingsSource(Strict):
    """Explicit ratings plus user demographics and item titles/genres (MovieLens ``ml-100k`` layout)."""

    ratings: str
    users: str
    items: str
    genres: str
    ratings_separator: str = Field("\t", min_length=1, max_length=1)
    separator: str = Field("|", min_length=1, max_length=1)
    # The charsets Spark's text readers accept; ml-100k's titles are latin-1 (ISO-8859-1).
    encoding: Literal["iso-8859-1", "us-ascii", "utf-8", "utf-16", "utf-16be", "utf-16le", "utf-32"] = (
        "iso-8859-1"
    )
    demographics: list[Literal["gender", "occupation"]] = Field(
        default_factory=lambda: ["gender", "occupation"]
    )
    demographics_weight: float = Field(1.0, ge=0.0)
    als: AlsSettings = Field(default_factory=AlsSettings)
    top_titles: int = Field(10, ge=1, le=100)
    assigner: AssignerSettings = Field(default_factory=AssignerSettings)


class TrackingConfig(Strict):
    """MLflow tracking of every run: params, per-stage metrics and artifacts (``seglake.core.tracking``).

    Without ``tracking_uri`` a local lakehouse gets an SQLite store beside its tables; a lakehouse
    URI (``s3a://``, ``dbfs:/``) without one turns tracking off with a printed line.
    """

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str | None = Field(None, min_length=1, max_length=500)
    artifact_location: str | None = None

    @field_validator("tracking_uri", "artifact_location", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `${MLFLOW_TRACKING_URI:-}` expands to "" when the variable is unset: that means "default".
        return None if value == "" else value


class TextsSource(Strict):
    """Short texts (captions, bios, transcripts) or lists of tokens (hashtags), one row per id."""

    path: str
    format: Literal["csv", "parquet", "delta"] = "csv"
    id: str
    text: str
    group: str | None = None
    items: Literal["text", "list"] = "text"
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> "TextsSource":
        for name in (self.id, self.text, *([self.group] if self.group else [])):
            _check_identifier(name)
        return self


class TextClustersConfig(Strict):
    """Sentence embeddings, KMeans per group with k chosen by silhouette, a 2-D map, keywords."""

    embedder: Literal["minilm", "tfidf_svd"] = "minilm"
    k: int | None = Field(None, ge=2)
    k_min: int = Field(2, ge=2)
    k_max: int = Field(8, ge=2)
    seed: int = 0
    silhouette_sample: int = Field(5000, ge=100)
    map_sample: int = Field(5000, ge=10)
    min_group_size: int = Field(20, ge=4)
    keywords: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    svd_components: int = Field(100, ge=2)
    umap_neighbors: int = Field(15, ge=2)

    @model_validator(mode="after")
    def _range(self) -> "TextClustersConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) is below k_min ({self.k_min})")
        return self


class SeglakeConfig(Strict):
    """A whole use case: where tables live, what the source is, and each stage's settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    lakehouse: str
    spark: SparkSettings = Field(default_factory=SparkSettings)
    events: EventsSource | None = None
    entities: EntitiesSource | None = None
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    density: DensityConfig = Field(default_factory=DensityConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    classifier: ClassifierConfig | None = None
    ratings: RatingsSource | None = None
    texts: TextsSource | None = None
    text_clusters: TextClustersConfig = Field(default_factory=TextClustersConfig)
    source_file: str = Field("", exclude=True)
    config_hash: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _one_source(self) -> "SeglakeConfig":
        sources = [self.events, self.entities, self.ratings, self.texts]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("give exactly one source: 'events' (raw logs), 'entities' (a table), "
                             "'ratings' (ratings + users + items files) or 'texts' (short texts)")
        return self


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _resolve(path: str, base: Path) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", path):  # a URI (s3a://, dbfs:/, file:/) stays as is
        return path
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved).resolve())


def _apply_override(raw: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise SeglakeError(f"--set '{assignment}': expected dotted.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SeglakeError(f"--set '{assignment}': '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def _describe(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif item["type"] == "missing":
            problems.append(f"missing key '{key}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"key '{key}': {message} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(problems)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SeglakeConfig:
    """Read and validate a config file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : list of str
        ``dotted.key=value`` assignments applied before validation (values parsed as YAML).

    Returns
    -------
    SeglakeConfig

    Raises
    ------
    SeglakeError
        One message naming the file and every key at fault.
    """
    file = Path(path)
    if not file.is_file():
        raise SeglakeError(f"config file not found: {file}")
    text = file.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SeglakeError(f"{file}: not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise SeglakeError(f"{file}: the top level must be a mapping of keys")
    for assignment in overrides:
        _apply_override(raw, assignment)
    raw = _expand_env(raw)
    base = file.resolve().parent
    if isinstance(raw.get("lakehouse"), str):
        raw["lakehouse"] = _resolve(raw["lakehouse"], base)
    for section in ("events", "entities", "texts"):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get("path"), str):
            raw[section]["path"] = _resolve(raw[section]["path"], base)
    if isinstance(raw.get("ratings"), dict):
        for key in ("ratings", "users", "items", "genres"):
            if isinstance(raw["ratings"].get(key), str):
                raw["ratings"][key] = _resolve(raw["ratings"][key], base)
    raw["config_hash"] = hashlib.sha256(yaml.safe_dump(raw, sort_keys=True).encode()).hexdigest()[:16]
    raw["source_file"] = str(file)
    try:
        return SeglakeConfig.model_validate(raw)
    except ValidationError as err:
        raise SeglakeError(_describe(err, str(file))) from None


def check_run_id(run_id: str) -> str:
    """Run ids become partition values and table predicates: keep them to a safe alphabet."""
    if not RUN_ID.match(run_id):
        raise SeglakeError(
            f"run id '{run_id}' must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return run_id


def require_columns(available: list[str], names: list[str], key: str, where: str) -> None:
    """Fail with one line if a column named in config is not in the data's real schema.

    Every column name that reaches Spark from config passes here first, so config cannot inject
    expressions: only names that exist verbatim in the schema are ever used.
    """
    missing = [n for n in names if n not in available]
    if missing:
        raise SeglakeError(
            f"{key}: column(s) {', '.join(repr(m) for m in missing)} not found in {where} "
            f"(it has: {', '.join(available)})"
        )
