"""Typed configuration: one YAML per use case, validated once at the edge into pydantic models.

The package is split by section: ``base`` (the strict base model, column-name checks, ``KRange``,
``SparkSettings``), ``sources`` (events, entities, ratings, texts, classifier), ``stages`` (features,
filter, transform, sweep, density, explain, drift, tracking, text clusters), ``usecase``
(``SeglakeConfig``) and ``loading`` (``load_config`` and the checks on run ids and column names).
Every name is re-exported here: import from ``seglake.core.config``.

Relative paths in a config (``lakehouse``, ``events.path``, ``entities.path``) are resolved against
the folder of the config file, so a config means the same thing from any working directory.
``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the environment first.
"""

from seglake.core.config.base import (
    CatalogConfig,
    IDENTIFIER,
    RUN_ID,
    ColumnType,
    KRange,
    SparkSettings,
    Strict,
    check_identifier,
)
from seglake.core.config.loading import check_run_id, load_config, require_columns
from seglake.core.config.sources import (
    AlsSettings,
    AssignerSettings,
    ClassifierConfig,
    EntitiesSource,
    EventRules,
    EventsSource,
    GbtParams,
    LogisticRegressionParams,
    RatingsSource,
    TextsSource,
)
from seglake.core.config.stages import (
    AggName,
    DensityConfig,
    DriftConfig,
    ExplainConfig,
    FeatureDef,
    FeaturesConfig,
    FilterConfig,
    HdbscanConfig,
    NameOverrides,
    SweepConfig,
    TextClustersConfig,
    TrackingConfig,
    TransformConfig,
    UmapConfig,
)
from seglake.core.config.usecase import SeglakeConfig

__all__ = [
    "IDENTIFIER", "RUN_ID", "AggName", "AlsSettings", "AssignerSettings", "CatalogConfig", "ClassifierConfig",
    "ColumnType", "DensityConfig", "DriftConfig", "EntitiesSource", "EventRules", "EventsSource",
    "ExplainConfig", "FeatureDef", "FeaturesConfig", "FilterConfig", "GbtParams", "HdbscanConfig",
    "KRange", "LogisticRegressionParams", "NameOverrides", "RatingsSource", "SeglakeConfig",
    "SparkSettings", "Strict",
    "SweepConfig", "TextClustersConfig", "TextsSource", "TrackingConfig", "TransformConfig",
    "UmapConfig", "check_identifier", "check_run_id", "load_config", "require_columns",
]
