"""Each stage's settings: features, filter, transform, sweep, density, explain, drift, tracking, text clusters."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from seglake.core.config.base import KRange, Strict, check_identifier

AggName = Literal["count", "sum", "mean", "min", "max", "count_distinct", "ratio", "active_days",
                  "recency_days", "tenure_days", "events_per_active_day"]
# Aggregations of the event time; their column defaults to the features' time column.
TIME_AGGS = ("recency_days", "tenure_days", "events_per_active_day")
_WINDOW = re.compile(r"^([1-9][0-9]*)d$")


class FeatureDef(Strict):
    """One per-entity aggregation over ``bronze/events``.

    ``window`` (``"30d"``) keeps only the events of the last that many days before
    ``features.as_of`` for this one feature.

    Examples
    --------
    >>> FeatureDef(agg="count", window="30d").window_days
    30
    >>> FeatureDef(agg="recency_days").column is None  # the features' time column
    True
    """

    agg: AggName
    column: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    window: str | None = None

    @field_validator("window")
    @classmethod
    def _window(cls, window: str | None) -> str | None:
        if window is not None and not _WINDOW.match(window):
            raise ValueError("a window is a whole number of days followed by 'd', such as '30d'")
        return window

    @model_validator(mode="after")
    def _operands(self) -> "FeatureDef":
        if self.agg == "ratio":
            if not (self.numerator and self.denominator):
                raise ValueError("agg 'ratio' needs numerator and denominator (feature names)")
            if self.window:
                raise ValueError("a ratio has no window of its own: give its numerator and "
                                 "denominator the window")
        elif self.agg not in ("count", *TIME_AGGS) and not self.column:
            raise ValueError(f"agg '{self.agg}' needs a column")
        if self.column:
            check_identifier(self.column)
        return self

    @property
    def window_days(self) -> int | None:
        """The window in days, or None when every event up to ``as_of`` counts."""
        return int(self.window[:-1]) if self.window else None


class FeaturesConfig(Strict):
    """Per-entity features aggregated from events into ``silver/entities``.

    ``as_of`` is the moment time-aware features are measured from (default: the latest event);
    ``time_column`` the events column holding each event's time (default: the one timestamp
    column of the events). A date or a time without a zone is UTC.

    Examples
    --------
    >>> FeaturesConfig(as_of="2024-03-01").as_of.isoformat()
    '2024-03-01T00:00:00+00:00'
    """

    entity: str = "uid"
    definitions: dict[str, FeatureDef] = Field(default_factory=dict)
    approximate_distinct: bool = False
    # HLL++ sketch size grows as 1/rsd**2: at 0.01 the sketches cost more than exact counting
    # (bench/bench_features.py); 0.05 is Spark's own default.
    approximate_rsd: float = Field(0.05, gt=0.0, lt=0.4)
    as_of: datetime | None = None
    time_column: str | None = None

    @field_validator("as_of", mode="before")
    @classmethod
    def _date_is_midnight(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-03-01 as a date: it means that day's start.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time())
        return value

    @field_validator("as_of")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    @field_validator("time_column")
    @classmethod
    def _time_column(cls, name: str | None) -> str | None:
        return None if name is None else check_identifier(name)

    @field_validator("definitions")
    @classmethod
    def _names(cls, definitions: dict[str, FeatureDef]) -> dict[str, FeatureDef]:
        for name, spec in definitions.items():
            check_identifier(name)
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


class SweepConfig(KRange):
    """Clustering over a range of k, with the choice of k explained."""

    algorithm: Literal["kmeans", "bisecting_kmeans", "gaussian_mixture"] = "kmeans"
    k: int | None = Field(None, ge=2)
    seed: int = 0
    max_iter: int = Field(30, ge=1)
    silhouette_sample: int = Field(10_000, ge=100)
    fit_sample: int | None = Field(250_000, ge=1_000)
    min_share: float = Field(0.005, ge=0.0, lt=0.5)
    concurrent_fits: int = Field(4, ge=1, le=64)
    # the chosen k's segments' stability (gold/segment_stability): scikit-learn KMeans refits
    stability_resamples: int = Field(20, ge=0, le=500)
    stability_sample: int = Field(20_000, ge=100)
    stability_fraction: float = Field(0.5, gt=0.0, lt=1.0)


class UmapConfig(Strict):
    """UMAP settings for clustering (not for pictures: the 2-D map has its own fit).

    The defaults follow umap-learn's advice for clustering: more neighbours than the default 15
    (broader structure, fewer spurious splits), ``min_dist`` 0 (points packed densely, which is what
    HDBSCAN looks for) and a few more dimensions than 2 (less tearing of clusters).
    ``n_neighbors`` None (the default): chosen with ``hdbscan.min_cluster_size`` by the density rule
    from ``density.grid_neighbors``.
    """

    n_neighbors: int | None = Field(None, ge=2)
    min_dist: float = Field(0.0, ge=0.0)
    n_components: int = Field(5, ge=2)
    metric: Literal["euclidean", "manhattan", "cosine", "correlation"] = "euclidean"
    map_min_dist: float = Field(0.1, ge=0.0)
    n_epochs: int | None = Field(None, ge=10)


class HdbscanConfig(Strict):
    """HDBSCAN settings; ``min_samples`` defaults to ``min_cluster_size``; ``min_cluster_size`` None
    (the default) is chosen by the density rule from ``density.grid_cluster_shares``."""

    min_cluster_size: int | None = Field(None, ge=2)
    min_samples: int | None = Field(None, ge=1)
    cluster_selection_method: Literal["eom", "leaf"] = "eom"


class DensityConfig(Strict):
    """UMAP + HDBSCAN on a bounded sample, then a surrogate classifier for everyone.

    Stability (:mod:`seglake.segmentation.stability`): ``stability_resamples`` HDBSCAN refits on
    random ``stability_fraction`` subsets of the embedding plus one UMAP + HDBSCAN refit; clusters
    whose mean Jaccard is under ``min_stability`` are ``unstable`` (merged or made noise). Settings
    not pinned are chosen from the grid by the highest mean stability among those whose stable
    clusters cover ``min_coverage`` of the sample and number at most ``max_clusters``, measured on
    ``screen_resamples`` refits of each (0: all of them); the chosen setting then runs the rest.

    Recursion (seed 004): with ``depth`` above 1, every stable cluster of more than
    ``min_split_size`` entities is embedded and clustered again on its own members, level by level;
    a parent keeps its split only when its children are at least 2 stable clusters covering
    ``min_coverage`` of its sample and their surrogate's held-out accuracy is ``min_split_fidelity``.

    Examples
    --------
    >>> try:
    ...     DensityConfig(stability_fraction=0)
    ... except ValueError as err:
    ...     print(err.errors()[0]["msg"])
    Value error, density.stability_fraction 0 turns stability off, and the automatic density settings are chosen by stability: pin density.umap.n_neighbors and density.hdbscan.min_cluster_size
    >>> DensityConfig(stability_fraction=0, umap={"n_neighbors": 30}, hdbscan={"min_cluster_size": 50}).unstable
    'merge'
    """

    sample_size: int = Field(50_000, ge=100)
    group_by: Literal["none", "segment"] = "none"
    seed: int = 0
    umap: UmapConfig = Field(default_factory=UmapConfig)
    hdbscan: HdbscanConfig = Field(default_factory=HdbscanConfig)
    stability_fraction: float = Field(0.5, ge=0.0, le=1.0)
    stability_resamples: int = Field(20, ge=0, le=500)
    screen_resamples: int = Field(5, ge=0, le=500)
    min_stability: float = Field(0.6, ge=0.0, le=1.0)
    unstable: Literal["merge", "noise"] = "merge"
    max_clusters: int = Field(20, ge=2, le=999)
    min_coverage: float = Field(0.5, ge=0.0, le=1.0)
    grid_neighbors: list[int] = Field(default_factory=lambda: [15, 30], min_length=1)
    grid_cluster_shares: list[float] = Field(default_factory=lambda: [0.005, 0.01, 0.02, 0.04],
                                             min_length=1)
    surrogate_trees: int = Field(100, ge=1)
    surrogate_max_depth: int = Field(6, ge=1, le=16)
    surrogate_holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    depth: int = Field(1, ge=1, le=4)
    min_split_size: int = Field(1000, ge=20)
    min_split_fidelity: float = Field(0.8, ge=0.0, le=1.0)

    @field_validator("grid_neighbors")
    @classmethod
    def _neighbors(cls, values: list[int]) -> list[int]:
        if min(values) < 2:
            raise ValueError("density.grid_neighbors: every n_neighbors is at least 2")
        return values

    @field_validator("grid_cluster_shares")
    @classmethod
    def _shares(cls, values: list[float]) -> list[float]:
        if not all(0.0 < share < 1.0 for share in values):
            raise ValueError("density.grid_cluster_shares: every share of the sample is between 0 and 1")
        return values

    @model_validator(mode="after")
    def _stability_for_the_rule(self) -> "DensityConfig":
        automatic = self.umap.n_neighbors is None or self.hdbscan.min_cluster_size is None
        if automatic and self.stability_fraction == 0:
            raise ValueError("density.stability_fraction 0 turns stability off, and the automatic density "
                             "settings are chosen by stability: pin density.umap.n_neighbors and "
                             "density.hdbscan.min_cluster_size")
        if self.depth > 1 and self.stability_fraction == 0:
            raise ValueError(f"density.depth {self.depth} keeps a child split only when its clusters are "
                             "stable, and density.stability_fraction 0 turns stability off")
        return self


SegmentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class NameOverrides(Strict):
    """Names chosen by hand, by id: each replaces the automatic name of that segment or cluster.

    Examples
    --------
    >>> NameOverrides(segments={0: "big spenders"}, clusters={3: "night owls"}).clusters
    {3: 'night owls'}
    >>> NameOverrides(segments={0: "fans"}, clusters={3: "fans"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for NameOverrides
      Value error, the name 'fans' is given twice (segments 0, clusters 3): names are unique within a run ...
    """

    segments: dict[int, SegmentName] = Field(default_factory=dict)
    clusters: dict[int, SegmentName] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> "NameOverrides":
        owners: dict[str, list[str]] = {}
        for key in ("segments", "clusters"):
            for target, name in getattr(self, key).items():
                owners.setdefault(name, []).append(f"{key} {target}")
        for name, where in owners.items():
            if len(where) > 1:
                raise ValueError(f"the name '{name}' is given twice ({', '.join(where)}): "
                                 f"names are unique within a run")
        return self


class ExplainConfig(Strict):
    """One-vs-rest XGBoost + SHAP per cluster and per segment, and their names."""

    min_cluster_size: int = Field(30, ge=2)
    sample_size: int = Field(20_000, ge=100)
    holdout_fraction: float = Field(0.25, gt=0.0, lt=0.9)
    top_features: int = Field(4, ge=1)
    seed: int = 0
    trees: int = Field(100, ge=1)
    max_depth: int = Field(4, ge=1, le=16)
    noun: str = Field("entities", min_length=1, max_length=40)
    names: NameOverrides = Field(default_factory=NameOverrides)


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


class TextClustersConfig(KRange):
    """Sentence embeddings, KMeans per group with k chosen by silhouette, a 2-D map, keywords."""

    k_max: int = Field(8, ge=2)
    embedder: Literal["minilm", "tfidf_svd"] = "minilm"
    k: int | None = Field(None, ge=2)
    seed: int = 0
    silhouette_sample: int = Field(5000, ge=100)
    map_sample: int = Field(5000, ge=10)
    min_group_size: int = Field(20, ge=4)
    keywords: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    svd_components: int = Field(100, ge=2)
    umap_neighbors: int = Field(15, ge=2)
