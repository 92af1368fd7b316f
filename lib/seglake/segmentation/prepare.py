"""Prepare entities for clustering: the activity filter, then log1p, imputation, encoding and scaling.

Both steps are pure functions of DataFrames and typed config, so tests call them on tiny inline
tables. The transform is a Spark ML :class:`~pyspark.ml.PipelineModel` built only from MLlib stages
(``SQLTransformer``, ``Imputer``, ``StringIndexer``, ``OneHotEncoder``, ``VectorAssembler``,
scalers): it saves and loads with MLlib's own persistence, so scoring new entities later applies
exactly the fitted medians, category indices and scaling of the run.
"""

from __future__ import annotations

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    MinMaxScaler,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import FilterConfig, TransformConfig, require_columns
from seglake.core.errors import SeglakeError

ENTITY_ID = "entity_id"
FEATURES = "features"  # the output vector column of the transform
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
_CATEGORICAL = (T.StringType, T.BooleanType)


def feature_columns(entities: DataFrame) -> tuple[list[str], list[str]]:
    """Split the columns of ``silver/entities`` into numeric features and categorical columns.

    Every numeric column except ``entity_id`` is a feature; string and boolean columns are
    categorical. Columns whose name starts with ``_`` are bookkeeping (ingest/build stamps) and are
    never clustered on.

    Parameters
    ----------
    entities : DataFrame
        ``entity_id`` plus feature columns.

    Returns
    -------
    features, categorical : list of str
        Column names in schema order.

    Raises
    ------
    SeglakeError
        When ``entity_id`` is missing or there is no numeric feature.

    Examples
    --------
    >>> entities = spark.createDataFrame([("a", 3, 10.0, "fr", True)],
    ...     "entity_id string, plays long, minutes double, country string, _ingested boolean")
    >>> feature_columns(entities)
    (['plays', 'minutes'], ['country'])
    """
    require_columns(entities.columns, [ENTITY_ID], "silver/entities", "the entities table")
    features, categorical = [], []
    for field in entities.schema.fields:
        if field.name == ENTITY_ID or field.name.startswith("_"):
            continue
        if isinstance(field.dataType, _NUMERIC):
            features.append(field.name)
        elif isinstance(field.dataType, _CATEGORICAL):
            categorical.append(field.name)
    if not features:
        raise SeglakeError(
            f"silver/entities has no numeric feature column (it has: {', '.join(entities.columns)})"
        )
    return features, categorical


def filter_condition(entities: DataFrame, bounds: FilterConfig) -> Column:
    """The boolean column that keeps an entity: every bounded feature within [min, max].

    Bound names are checked against the real schema first (``filter.min``, ``filter.max``) and must
    be numeric. A null in a bounded feature does not pass: an entity with an unknown activity level
    is not one the filter can vouch for.

    Examples
    --------
    >>> entities = spark.createDataFrame([("a", 5), ("b", 0), ("c", 12), ("d", None)],
    ...                                  "entity_id string, plays long")
    >>> keep = filter_condition(entities, FilterConfig(min={"plays": 1}, max={"plays": 10}))
    >>> [row.entity_id for row in entities.where(keep).collect()]
    ['a']
    """
    numeric = {f.name for f in entities.schema.fields if isinstance(f.dataType, _NUMERIC)}
    condition = F.lit(True)
    for key, limits, compare in (("filter.min", bounds.min, Column.__ge__),
                                 ("filter.max", bounds.max, Column.__le__)):
        require_columns(entities.columns, list(limits), key, "silver/entities")
        not_numeric = [name for name in limits if name not in numeric]
        if not_numeric:
            raise SeglakeError(f"{key}: column(s) {', '.join(map(repr, not_numeric))} are not numeric")
        for name, limit in limits.items():
            condition = condition & compare(F.col(name), F.lit(float(limit)))
    return F.coalesce(condition, F.lit(False))


def filter_counts(entities: DataFrame, bounds: FilterConfig) -> tuple[int, int]:
    """``(total_rows, kept_rows)`` of the filter, both counted in one pass over ``entities``.

    Raises
    ------
    SeglakeError
        A bound names a column that is absent or not numeric, the table is empty, or nothing passes.

    Examples
    --------
    >>> entities = spark.createDataFrame([("a", 5), ("b", 0), ("c", 12), ("d", None)],
    ...                                  "entity_id string, plays long")
    >>> filter_counts(entities, FilterConfig(min={"plays": 1}))
    (4, 2)
    """
    keep = filter_condition(entities, bounds)
    counts = entities.agg(
        F.count(F.lit(1)).alias("total"), F.sum(F.when(keep, 1).otherwise(0)).alias("kept")
    ).first()
    total, kept_rows = int(counts["total"]), int(counts["kept"] or 0)
    if total == 0:
        raise SeglakeError("silver/entities is empty: nothing to segment")
    if kept_rows == 0:
        raise SeglakeError(
            f"filter: no entity of {total:,} passes filter.min {dict(bounds.min)} / "
            f"filter.max {dict(bounds.max)}"
        )
    return total, kept_rows


def apply_filter(entities: DataFrame, bounds: FilterConfig) -> tuple[DataFrame, float]:
    """Keep entities within the configured bounds, and measure what fraction was kept.

    Parameters
    ----------
    entities : DataFrame
        ``silver/entities``.
    bounds : FilterConfig
        Inclusive ``min`` and ``max`` per feature name.

    Returns
    -------
    kept : DataFrame
        The rows that pass (lazy).
    kept_fraction : float
        ``kept_rows / total_rows`` (the seed printed 0.71 for users, 0.30 for authors).

    Raises
    ------
    SeglakeError
        A bound names a column that is absent or not numeric (the message names ``filter.min`` or
        ``filter.max`` and the column), the table is empty, or nothing passes.

    Examples
    --------
    >>> entities = spark.createDataFrame([("a", 5), ("b", 0), ("c", 12), ("d", None)],
    ...                                  "entity_id string, plays long")
    >>> kept, kept_fraction = apply_filter(entities, FilterConfig(max={"plays": 10}))
    >>> sorted(row.entity_id for row in kept.collect()), kept_fraction
    (['a', 'b'], 0.5)
    """
    total, kept_rows = filter_counts(entities, bounds)
    return entities.where(filter_condition(entities, bounds)), kept_rows / total


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _numeric_expression(name: str, log: bool) -> str:
    column = _quoted(name)
    if log:
        # Signed log1p: equals log1p(x) for x >= 0 (counts, durations) and keeps a negative value
        # negative instead of turning it into NaN (log1p(x) is undefined for x <= -1).
        return f"CAST(SIGN({column}) * LOG1P(ABS({column})) AS DOUBLE)"
    return f"CAST({column} AS DOUBLE)"


def build_transform(
    features: list[str], categorical: list[str], settings: TransformConfig
) -> Pipeline:
    """The unfitted transform: log1p, median imputation, one-hot encoding, assembly, scaling.

    Stages, in order:

    1. ``SQLTransformer``: each feature as a double, through signed ``log1p`` when listed in
       ``transform.log1p`` (``true`` = every feature); categoricals cast to string.
    2. ``Imputer(strategy="median")``: a null or NaN feature becomes the median of the kept
       entities (after log1p), so no entity is dropped for one missing value.
    3. ``StringIndexer(handleInvalid="keep")`` + ``OneHotEncoder``: a category unseen at fit time (or
       null) maps to the all-zero vector instead of failing scoring.
    4. ``VectorAssembler`` then ``StandardScaler(withMean, withStd)``, ``MinMaxScaler`` or nothing
       (``transform.scaling``) into the ``features`` vector.

    Raises
    ------
    SeglakeError
        ``transform.log1p`` names a column that is not a numeric feature.

    Examples
    --------
    >>> pipeline = build_transform(["plays", "minutes"], ["country"], TransformConfig(scaling="minmax"))
    >>> [type(stage).__name__ for stage in pipeline.getStages()]
    ['SQLTransformer', 'Imputer', 'StringIndexer', 'OneHotEncoder', 'VectorAssembler', 'MinMaxScaler']
    """
    if isinstance(settings.log1p, list):
        require_columns(features, settings.log1p, "transform.log1p", "the numeric features")
        logged = set(settings.log1p)
    else:
        logged = set(features) if settings.log1p else set()
    numeric = [f"__num__{f}" for f in features]
    imputed = [f"__imp__{f}" for f in features]
    as_text = [f"__cat__{c}" for c in categorical]
    selects = [f"{_numeric_expression(f, f in logged)} AS {_quoted(n)}" for f, n in zip(features, numeric)]
    selects += [f"CAST({_quoted(c)} AS STRING) AS {_quoted(t)}" for c, t in zip(categorical, as_text)]
    stages: list = [
        SQLTransformer(statement=f"SELECT *, {', '.join(selects)} FROM __THIS__"),
        Imputer(strategy="median", inputCols=numeric, outputCols=imputed),
    ]
    encoded: list[str] = []
    if categorical:
        indexed = [f"__idx__{c}" for c in categorical]
        encoded = [f"__ohe__{c}" for c in categorical]
        stages += [
            StringIndexer(inputCols=as_text, outputCols=indexed, handleInvalid="keep"),
            OneHotEncoder(inputCols=indexed, outputCols=encoded),
        ]
    assembled = FEATURES if settings.scaling == "none" else "__assembled"
    stages.append(VectorAssembler(inputCols=imputed + encoded, outputCol=assembled))
    if settings.scaling == "standard":
        stages.append(StandardScaler(inputCol=assembled, outputCol=FEATURES, withMean=True, withStd=True))
    elif settings.scaling == "minmax":
        stages.append(MinMaxScaler(inputCol=assembled, outputCol=FEATURES))
    return Pipeline(stages=stages)


def fit_transform_pipeline(
    kept: DataFrame, features: list[str], categorical: list[str], settings: TransformConfig
) -> PipelineModel:
    """Fit :func:`build_transform` on the kept entities.

    Parameters
    ----------
    kept : DataFrame
        Filtered entities (the population the medians and scaling describe).
    features, categorical : list of str
        From :func:`feature_columns`.
    settings : TransformConfig
        ``log1p`` and ``scaling``.

    Returns
    -------
    PipelineModel
        ``transform(df)`` adds the ``features`` vector (and ``__``-prefixed intermediates) to any
        DataFrame with the same columns; save it with ``model.write().overwrite().save(path)``.

    Examples
    --------
    Signed log1p, the null imputed with the median, then standard scaling:

    >>> kept = spark.createDataFrame([("a", 1), ("b", 3), ("c", None), ("d", 7)],
    ...                              "entity_id string, plays long")
    >>> model = fit_transform_pipeline(kept, ["plays"], [], TransformConfig())
    >>> [row.features.toArray().round(3).tolist() for row in vectors(model, kept).collect()]
    [[-1.225], [0.0], [0.0], [1.225]]
    """
    return build_transform(features, categorical, settings).fit(kept)


def vectors(model: PipelineModel, kept: DataFrame) -> DataFrame:
    """``entity_id`` and the ``features`` vector of each kept entity.

    Examples
    --------
    Without scaling, a feature's signed log1p then the one-hot country (``fr``, ``de``; a null
    country is the all-zero vector):

    >>> kept = spark.createDataFrame([("a", 1, "fr"), ("b", 3, "de"), ("c", 7, None)],
    ...                              "entity_id string, plays long, country string")
    >>> model = fit_transform_pipeline(kept, ["plays"], ["country"], TransformConfig(scaling="none"))
    >>> [(r.entity_id, r.features.toArray().round(3).tolist()) for r in vectors(model, kept).collect()]
    [('a', [0.693, 0.0, 1.0]), ('b', [1.386, 1.0, 0.0]), ('c', [2.079, 0.0, 0.0])]
    """
    return model.transform(kept).select(ENTITY_ID, FEATURES)
