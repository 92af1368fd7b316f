"""Train the claim/opinion classifier (seed 003) and save it as one Spark ML PipelineModel.

Why a PipelineModel and not, as in the seed, a Keras model or a scikit-learn pipeline: the fitted
artefact holds every step from raw fields to class name (tokenizer, vocabulary, IDF weights, category
indexes, log1p, classifier, class names), is saved in MLlib's own format with no pickles, and the same
folder scores a billion rows with ``model.transform`` on a cluster and one record from
``seglake classify`` on a laptop. The training data never leaves Spark, so the stage also runs
unchanged when the table no longer fits one machine.

Steps, each a small function the tests call directly:

1. :func:`read_source` reads the ``entities`` source with every column as text.
2. :func:`check_videos` types the columns and gives each unusable row a reason (``null:<col>``,
   ``bad_type:<col>``, ``negative:<col>``, ``not_allowed:<label>``, ``duplicate_id``,
   ``malformed_line``); those rows go to ``bronze/quarantine``, keyed by source file and run.
3. :func:`assign_split` puts each row in train, validation or test by a seeded hash of its id, so
   a video stays in its split whatever else the file holds and however Spark partitions it.
4. :func:`feature_pipeline` is fitted on train; each of ``classifier.models`` is fitted on the
   same features and the best F1 on validation wins; the test split is scored once, by the winner.
5. The model goes to ``models/<run_id>/classifier`` (with ``inputs.json``, ``metrics.json`` and a
   ``manifest.json`` holding the sha256 of each, checked by
   :func:`seglake.usecases.claims.classify.load_classifier`), the metrics to
   ``gold/classifier_metrics``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import (
    IDF, CountVectorizer, IndexToString, OneHotEncoder, RegexTokenizer, SQLTransformer,
    StopWordsRemover, StringIndexer, VectorAssembler,
)
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from seglake.usecases.claims.classify import (
    INPUTS_FILE, METRICS_FILE, MODEL_FOLDER, PIPELINE_PARTS, PREDICTED_CLASS, ModelInputs,
)
from seglake.core.artifacts import library_versions, save_model, write_manifest
from seglake.core.config import ClassifierConfig, EntitiesSource, SeglakeConfig, require_columns
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import CORRUPT, Tables, read_delta, replace_rows, sql_string, write_run
from seglake.core.tables import read_source as read_input

# CSV defaults of the entities source; the config's entities.options override them.
CSV_OPTIONS = {"header": "true"}
REASON = "_reason"
RAW = "_raw"
SPLIT = "split"
LABEL = "label"
FEATURES = "features"
SPLITS = ("train", "validation", "test")


def read_source(spark: SparkSession, source: EntitiesSource) -> DataFrame:
    """Read the entities source with every column as text, plus ``_raw`` (the row as read).

    Text first, so that a value of the wrong type becomes a quarantined row with a reason instead of
    a failed job or a silent null; for CSV, a line Spark cannot split into the header's columns is
    kept whole in ``_raw``.

    Parameters
    ----------
    spark : SparkSession
    source : EntitiesSource
        ``path``, ``format`` (csv, parquet or delta) and reader ``options``.

    Returns
    -------
    DataFrame
        The source's columns as strings, ``_corrupt_record`` and ``_raw``.

    Raises
    ------
    SeglakeError
        The source cannot be read: one line naming ``entities.path`` (see
        :func:`seglake.core.tables.read_source`, which reads it).
    """
    options = {**CSV_OPTIONS, **source.options} if source.format == "csv" else dict(source.options)
    frame = read_input(spark, source.path, source.format, options, "entities.path",
                       as_text=True, corrupt=True)
    header = [c for c in frame.columns if c != CORRUPT]
    raw = F.coalesce(frame[CORRUPT], F.to_json(F.struct(*[frame[c] for c in header])))
    return frame.withColumn(RAW, raw)


def check_videos(frame: DataFrame, spec: ClassifierConfig, id_column: str) -> DataFrame:
    """Type the classifier's columns and attach ``_reason`` (null for a usable row).

    Parameters
    ----------
    frame : DataFrame
        Text columns (as :func:`read_source` gives), optionally ``_corrupt_record`` and ``_raw``.
    spec : ClassifierConfig
    id_column : str

    Returns
    -------
    DataFrame
        ``id_column`` (text), ``label`` (1.0 positive class, 0.0 negative class), the text and
        categorical columns, the numeric columns as doubles, ``_raw`` and ``_reason`` (every problem
        of the row joined by ``;``).
    """
    text_columns = [id_column, spec.text, *spec.categorical]
    numbers = {c: F.col(c).try_cast("double") for c in spec.numeric}
    label_value = F.trim(F.col(spec.label))
    label = (F.when(label_value == spec.positive_class, 1.0)
             .when(label_value == spec.negative_class, 0.0).cast("double"))

    def blank(name: str) -> Column:
        return F.col(name).isNull() | (F.trim(F.col(name)) == "")

    checks = [F.when(blank(c), F.lit(f"null:{c}")) for c in [spec.label, *text_columns, *spec.numeric]]
    checks.append(F.when(~blank(spec.label) & label.isNull(), F.lit(f"not_allowed:{spec.label}")))
    for name, value in numbers.items():
        checks.append(F.when(~blank(name) & value.isNull(), F.lit(f"bad_type:{name}")))
        checks.append(F.when(value < 0, F.lit(f"negative:{name}")))
    corrupt = F.col(CORRUPT).isNotNull() if CORRUPT in frame.columns else F.lit(False)
    problems = F.nullif(F.concat_ws(";", *checks), F.lit(""))
    reason = F.when(corrupt, F.lit("malformed_line")).otherwise(problems)
    raw = F.col(RAW) if RAW in frame.columns else F.to_json(F.struct(*frame.columns))
    checked = frame.select(
        *[F.col(c) for c in text_columns], label.alias(LABEL),
        *[value.alias(name) for name, value in numbers.items()],
        raw.alias(RAW), reason.alias(REASON), F.monotonically_increasing_id().alias("_position"),
    )
    # A repeated id would let one video sit in train and test at once: the first copy stays.
    first_copy = Window.partitionBy(id_column, F.col(REASON).isNull()).orderBy("_position")
    duplicate = F.col(REASON).isNull() & (F.row_number().over(first_copy) > 1)
    return checked.withColumn(
        REASON, F.when(duplicate, F.lit("duplicate_id")).otherwise(F.col(REASON))
    ).drop("_position")


def assign_split(frame: DataFrame, id_column: str, spec: ClassifierConfig) -> DataFrame:
    """Add ``split`` (train, validation or test) from a seeded hash of the id.

    Unlike ``randomSplit``, the split of a row depends only on its id and the seed: stable across
    re-runs, partitionings and additions to the file, so a video scored as "test" is never trained on.

    Parameters
    ----------
    frame : DataFrame
    id_column : str
    spec : ClassifierConfig
        ``seed`` and the three fractions.

    Returns
    -------
    DataFrame
        ``frame`` plus ``split``.
    """
    bucket = F.pmod(F.xxhash64(F.col(id_column), F.lit(spec.seed)), F.lit(1_000_000)) / 1_000_000.0
    train_end = spec.train_fraction
    validation_end = spec.train_fraction + spec.validation_fraction
    split = F.when(bucket < train_end, "train").when(bucket < validation_end, "validation")
    return frame.withColumn(SPLIT, split.otherwise("test"))


def feature_pipeline(spec: ClassifierConfig) -> Pipeline:
    """The unfitted steps from raw fields to the ``features`` vector.

    Text: words (letters, digits, apostrophes; lower case) → optional stop-word removal → counts
    over a vocabulary fitted on train → IDF. Categorical: index (unseen values get their own slot
    instead of failing) → one-hot. Numeric: ``log1p``, because counts span six orders of magnitude.

    Parameters
    ----------
    spec : ClassifierConfig

    Returns
    -------
    Pipeline
        Reads the configured columns, writes ``features`` (intermediate columns are named
        ``<column>__<step>``).
    """
    words = f"{spec.text}__words"
    stages: list[Any] = [RegexTokenizer(inputCol=spec.text, outputCol=words, pattern=r"[^\w']+")]
    if spec.remove_stop_words:
        stages.append(StopWordsRemover(inputCol=words, outputCol=f"{spec.text}__kept"))
        words = f"{spec.text}__kept"
    stages += [
        CountVectorizer(inputCol=words, outputCol=f"{spec.text}__counts", vocabSize=spec.vocab_size,
                        minDF=float(spec.min_doc_freq)),
        IDF(inputCol=f"{spec.text}__counts", outputCol=f"{spec.text}__tfidf"),
    ]
    assembled = [f"{spec.text}__tfidf"]
    if spec.categorical:
        indexes = [f"{c}__index" for c in spec.categorical]
        one_hots = [f"{c}__onehot" for c in spec.categorical]
        stages += [
            StringIndexer(inputCols=spec.categorical, outputCols=indexes, handleInvalid="keep"),
            OneHotEncoder(inputCols=indexes, outputCols=one_hots, handleInvalid="keep"),
        ]
        assembled += one_hots
    if spec.numeric:
        logs = ", ".join(f"log1p(CAST(`{c}` AS DOUBLE)) AS `{c}__log1p`" for c in spec.numeric)
        stages.append(SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"))
        assembled += [f"{c}__log1p" for c in spec.numeric]
    stages.append(VectorAssembler(inputCols=assembled, outputCol=FEATURES))
    return Pipeline(stages=stages)


def candidate(name: str, spec: ClassifierConfig):
    """An unfitted classifier of ``classifier.models`` with its configured parameters."""
    if name == "logistic_regression":
        params = spec.logistic_regression
        return LogisticRegression(featuresCol=FEATURES, labelCol=LABEL, regParam=params.reg_param,
                                  elasticNetParam=params.elastic_net_param, maxIter=params.max_iter)
    params = spec.gbt
    return GBTClassifier(featuresCol=FEATURES, labelCol=LABEL, maxIter=params.trees,
                         maxDepth=params.max_depth, stepSize=params.step_size, seed=spec.seed)


@dataclass(frozen=True)
class Scores:
    """Confusion counts of one model on one split, and the measures derived from them.

    >>> scores = Scores(true_positive=8, false_positive=2, true_negative=9, false_negative=1)
    >>> scores.rows, scores.accuracy, scores.precision, round(scores.f1, 4)
    (20, 0.85, 0.8, 0.8421)
    >>> scores.as_dict(("opinion", "claim"))["confusion_matrix"]["counts"]
    [[9, 2], [1, 8]]
    """

    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int

    @classmethod
    def of(cls, predictions: DataFrame) -> "Scores":
        """Count ``label`` × ``prediction`` (at most four rows reach the driver)."""
        counts = {(r[0], r[1]): r[2] for r in predictions.groupBy(LABEL, "prediction").count().collect()}
        return cls(counts.get((1.0, 1.0), 0), counts.get((0.0, 1.0), 0),
                   counts.get((0.0, 0.0), 0), counts.get((1.0, 0.0), 0))

    @property
    def rows(self) -> int:
        """Rows scored."""
        return self.true_positive + self.false_positive + self.true_negative + self.false_negative

    @property
    def accuracy(self) -> float:
        """Share of rows whose predicted class is the actual class."""
        return (self.true_positive + self.true_negative) / self.rows if self.rows else 0.0

    @staticmethod
    def _f1(hits: int, false_alarms: int, misses: int) -> float:
        return 2 * hits / (2 * hits + false_alarms + misses) if hits else 0.0

    @property
    def precision(self) -> float:
        """Share of rows predicted positive that are positive."""
        predicted = self.true_positive + self.false_positive
        return self.true_positive / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        """Share of positive rows predicted positive."""
        actual = self.true_positive + self.false_negative
        return self.true_positive / actual if actual else 0.0

    @property
    def f1(self) -> float:
        """F1 of the positive class."""
        return self._f1(self.true_positive, self.false_positive, self.false_negative)

    @property
    def f1_macro(self) -> float:
        """Mean F1 of both classes: low when either class is badly served."""
        negative = self._f1(self.true_negative, self.false_negative, self.false_positive)
        return (self.f1 + negative) / 2

    def as_dict(self, classes: tuple[str, str]) -> dict[str, Any]:
        """Measures plus the confusion matrix (rows actual, columns predicted, in ``classes`` order)."""
        return {
            "rows": self.rows, "accuracy": self.accuracy, "precision": self.precision,
            "recall": self.recall, "f1": self.f1, "f1_macro": self.f1_macro,
            "confusion_matrix": {
                "labels": list(classes), "rows": "actual", "columns": "predicted",
                "counts": [[self.true_negative, self.false_positive],
                           [self.false_negative, self.true_positive]],
            },
        }


METRIC_COLUMNS = (
    "run_id string, use_case string, model string, chosen boolean, split string, rows long, "
    "accuracy double, precision double, recall double, f1 double, f1_macro double, "
    "true_positive long, false_positive long, true_negative long, false_negative long, "
    "positive_class string, negative_class string, recorded_at timestamp"
)


def _quarantine(checked: DataFrame, tables: Tables, source_path: str, run_id: str) -> int:
    """Replace this run's quarantined rows of this source; return how many the table now holds."""
    path = tables.quarantine
    rejected = checked.where(F.col(REASON).isNotNull()).select(
        F.col(RAW).alias("raw"), F.col(REASON).alias("reason"), F.lit(source_path).alias("_ingest_file"),
        F.current_timestamp().alias("_ingest_ts"), F.lit(run_id).alias("_ingest_run"),
    )
    predicate = f"_ingest_file = {sql_string(source_path)} AND _ingest_run = {sql_string(run_id)}"
    replace_rows(rejected, path, predicate)
    return read_delta(checked.sparkSession, path, "classify").where(predicate).count()


def _counts(checked: DataFrame) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Usable rows per split, quarantined rows per first reason, and classes seen per split (one job).

    Parameters
    ----------
    checked : DataFrame
        :func:`check_videos` then :func:`assign_split`.

    Returns
    -------
    (dict, dict, dict)
        Rows per split, quarantined rows per first reason, distinct labels per split.
    """
    bucket = F.when(F.col(REASON).isNull(), F.col(SPLIT)).otherwise(
        F.concat(F.lit("quarantine:"), F.split(F.col(REASON), ";")[0]))
    grouped = checked.groupBy(bucket.alias("bucket"), F.col(LABEL)).count().collect()
    splits = {s: sum(r["count"] for r in grouped if r.bucket == s) for s in SPLITS}
    classes = {s: len({r[LABEL] for r in grouped if r.bucket == s}) for s in SPLITS}
    reasons: dict[str, int] = {}
    for r in grouped:
        if r.bucket.startswith("quarantine:"):
            key = r.bucket.removeprefix("quarantine:")
            reasons[key] = reasons.get(key, 0) + r["count"]
    return splits, reasons, classes


def fit_and_choose(
    by_split: dict[str, DataFrame], spec: ClassifierConfig
) -> tuple[PipelineModel, str, dict[str, Scores], dict[str, Scores]]:
    """Fit the features on train, each of ``classifier.models`` on them, and keep the best.

    Parameters
    ----------
    by_split : dict
        ``train``, ``validation`` and ``test`` frames of usable rows (:func:`check_videos`).
    spec : ClassifierConfig

    Returns
    -------
    (PipelineModel, str, dict, dict)
        The whole model (features, the chosen classifier, index → class name in
        ``predicted_class``), the chosen name, its :class:`Scores` per split, and every
        candidate's validation scores. Highest validation F1 wins, then accuracy; a tie keeps
        the earlier (simpler) entry of ``classifier.models``. The test split is scored once, by
        the winner.
    """
    features = feature_pipeline(spec).fit(by_split["train"])
    vectors = {s: features.transform(f).select(LABEL, FEATURES).persist(StorageLevel.MEMORY_AND_DISK)
               for s, f in by_split.items()}
    try:
        fitted, validation = {}, {}
        for name in spec.models:
            fitted[name] = candidate(name, spec).fit(vectors["train"])
            validation[name] = Scores.of(fitted[name].transform(vectors["validation"]))
        chosen = max(spec.models, key=lambda n: (round(validation[n].f1, 6),
                                                 round(validation[n].accuracy, 6), -spec.models.index(n)))
        scores = {"train": Scores.of(fitted[chosen].transform(vectors["train"])),
                  "validation": validation[chosen],
                  "test": Scores.of(fitted[chosen].transform(vectors["test"]))}
    finally:
        for frame in vectors.values():
            frame.unpersist()
    classes = [spec.negative_class, spec.positive_class]
    model = PipelineModel(stages=[*features.stages, fitted[chosen],
                                  IndexToString(inputCol="prediction", outputCol=PREDICTED_CLASS,
                                                labels=classes)])
    return model, chosen, scores, validation


def train_classifier(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Train, choose, test and save the classifier of ``config.classifier``.

    Returns
    -------
    StageResult
        ``details['metrics']`` is the content of ``metrics.json``; ``details['model_path']`` the
        classifier folder.

    Raises
    ------
    SeglakeError
        No ``classifier`` or ``entities`` section, a configured column missing from the source, an
        empty split or a split with one class only, or counts that do not reconcile.
    """
    started = time.monotonic()
    spec, source = config.classifier, config.entities
    if spec is None or source is None:
        raise SeglakeError(
            f"{config.source_file}: the classify stage needs 'entities' and 'classifier' sections")
    tables = Tables.of(config)
    classes = (spec.negative_class, spec.positive_class)
    raw = read_source(spark, source)
    require_columns([c for c in raw.columns if c not in (CORRUPT, RAW)],
                    [source.id, spec.label, spec.text, *spec.categorical, *spec.numeric],
                    "classifier", source.path)
    checked = assign_split(check_videos(raw, spec, source.id), source.id, spec)
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    splits, reasons, classes_seen = _counts(checked)
    quarantined = _quarantine(checked, tables, source.path, run_id)
    rows_in = raw.count()
    if rows_in != sum(splits.values()) + quarantined or quarantined != sum(reasons.values()):
        raise SeglakeError(f"classify: {source.path} does not reconcile: {rows_in:,} rows read, "
                           f"splits {splits}, {quarantined:,} quarantined ({reasons})")
    if min(classes_seen.values()) < 2:
        raise SeglakeError(f"classify: every split needs rows of both classes ({splits}); "
                           f"check classifier.*_fraction and the label values")
    usable = checked.where(F.col(REASON).isNull())
    by_split = {s: usable.where(F.col(SPLIT) == s).drop(RAW, REASON, SPLIT) for s in SPLITS}
    try:
        model, chosen, scores, validation = fit_and_choose(by_split, spec)
    finally:
        checked.unpersist()

    model_path = f"{tables.models(run_id)}/{MODEL_FOLDER}"
    inputs = ModelInputs(spec.text, tuple(spec.categorical), tuple(spec.numeric), source.id, classes)
    others = ", ".join(f"{n} {validation[n].f1:.4f}" for n in spec.models if n != chosen)
    metrics = {
        "run_id": run_id, "use_case": config.name, "config_hash": config.config_hash,
        "source": source.path, "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "chosen_model": chosen,
        "why": f"highest validation F1 ({validation[chosen].f1:.4f}" + (f"; {others}" if others else "")
               + "); ties go to the earlier entry of classifier.models",
        "label": {"column": spec.label, "positive_class": spec.positive_class,
                  "mapping": {"0": spec.negative_class, "1": spec.positive_class}},
        "rows": {"input": rows_in, **splits, "quarantined": quarantined},
        "quarantine_reasons": reasons,
        **{split: s.as_dict(classes) for split, s in scores.items()},
        "candidates": {n: {"validation": validation[n].as_dict(classes)} for n in spec.models},
    }

    # The PipelineModel first (its save replaces the whole folder), then the two JSON files and the
    # manifest with every artefact's sha256, then the gold rows.
    save_model(model, model_path)
    write_manifest(spark, model_path,
                   {"run_id": run_id, "use_case": config.name, "config_hash": config.config_hash,
                    "chosen_model": chosen, "classes": list(classes), "libraries": library_versions()},
                   files={INPUTS_FILE: inputs.to_json().encode(),
                          METRICS_FILE: json.dumps(metrics, indent=2).encode()},
                   saved=PIPELINE_PARTS)
    _write_metrics(spark, config, run_id, chosen, scores, validation)

    test = scores["test"]
    message = (f"{chosen} chosen on validation; test accuracy {test.accuracy:.4f}, F1 {test.f1:.4f} "
               f"({test.rows:,} rows); quarantined {quarantined:,}; model at {model_path}")
    return StageResult("classify", rows_in, sum(splits.values()), time.monotonic() - started,
                       {"metrics": metrics, "model_path": model_path}, message)


def _write_metrics(spark: SparkSession, config: SeglakeConfig, run_id: str, chosen: str,
                   scores: dict[str, Scores], validation: dict[str, Scores]) -> None:
    """One ``gold/classifier_metrics`` row per split for the chosen model, per candidate on validation."""
    spec = config.classifier
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    evaluated = [(chosen, split, s) for split, s in scores.items()]
    evaluated += [(name, "validation", s) for name, s in validation.items() if name != chosen]
    rows = [
        (run_id, config.name, name, name == chosen, split, s.rows, s.accuracy, s.precision, s.recall,
         s.f1, s.f1_macro, s.true_positive, s.false_positive, s.true_negative, s.false_negative,
         spec.positive_class, spec.negative_class, now)
        for name, split, s in evaluated
    ]
    path = Tables.of(config).gold("classifier_metrics")
    write_run(spark.createDataFrame(rows, METRIC_COLUMNS), path, run_id)
