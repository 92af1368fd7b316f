"""Where a use case's data comes from: raw events, an entity table, ratings files, short texts, a classifier's columns."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from seglake.core.config.base import ColumnType, Strict, check_identifier


class EventRules(Strict):
    """Value rules for raw events; a row that breaks one goes to quarantine with the reason.

    No value rule is on by default: which columns must be present, non-negative or restricted to
    some values depends on the log's schema, so the config names them. ``dedupe`` left unset
    follows ``events.key`` (see :attr:`EventsSource.dedupe_columns`).
    """

    not_null: list[str] = Field(default_factory=list)
    non_negative: list[str] = Field(default_factory=list)
    allowed_values: dict[str, list[int]] = Field(default_factory=dict)
    dedupe: bool | None = None


# Names of delimiters that are not one fixed string; each is a Java regular expression that Spark's
# `split` applies to the line (after stripping the line's leading and trailing whitespace).
NAMED_DELIMITERS = {"whitespace": r"\s+"}


class DelimiterPattern(Strict):
    r"""Fields separated by a regular expression (Java syntax, as Spark's ``split`` reads it).

    Examples
    --------
    >>> print(DelimiterPattern(regex=r"\s*\|\s*").regex)
    \s*\|\s*
    >>> DelimiterPattern(regex="(")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for DelimiterPattern
    regex
      Value error, '(' is not a regular expression: missing ), unterminated subpattern ...
    """

    regex: str = Field(min_length=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as err:
            raise ValueError(f"'{regex}' is not a regular expression: {err}") from None
        return regex


class EventsSource(Strict):
    r"""Raw interaction logs (CSV or other delimited text, JSON lines or Parquet) ingested to ``bronze/events``.

    ``columns`` is required: the schema of the log (name → type) is the config's to give, and every
    column named in ``rules``, ``key`` or ``timestamp_format`` must be one of them. ``header``,
    ``delimiter`` apply to ``csv`` only; ``timestamp_format`` to any value read as text.

    Examples
    --------
    >>> log = EventsSource(path="raw", format="csv", header=False, delimiter="whitespace",
    ...                    columns={"customer": "long", "day": "timestamp", "amount": "double"},
    ...                    timestamp_format={"day": "yyyyMMdd"})
    >>> print(log.field_pattern, log.dedupe_columns)
    \s+ []
    >>> EventsSource(path="raw", columns={"id": "string", "n": "long"}, key="id").dedupe_columns
    ['id']
    >>> EventsSource(path="raw", columns={"id": "string", "n": "long"}, rules={"dedupe": True}).dedupe_columns
    ['id', 'n']
    """

    path: str
    format: Literal["csv", "json", "parquet"] = "parquet"
    columns: dict[str, ColumnType] = Field(min_length=1)
    key: str | None = None
    header: bool = True
    delimiter: str | DelimiterPattern | None = None
    timestamp_format: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str] = Field(default_factory=dict)
    rules: EventRules = Field(default_factory=EventRules)

    @field_validator("columns")
    @classmethod
    def _names(cls, columns: dict[str, str]) -> dict[str, str]:
        for name in columns:
            check_identifier(name)
        return columns

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, delimiter: str | DelimiterPattern | None) -> str | DelimiterPattern | None:
        if delimiter == "":
            raise ValueError("delimiter is empty: give a string such as ',' or '\\t', 'whitespace' or {regex: ...}")
        return delimiter

    @field_validator("timestamp_format")
    @classmethod
    def _patterns(cls, formats: dict[str, str]) -> dict[str, str]:
        empty = [c for c, pattern in formats.items() if not pattern.strip()]
        if empty:
            raise ValueError(f"timestamp_format is empty for {', '.join(empty)}")
        return formats

    @model_validator(mode="after")
    def _rules_name_columns(self) -> "EventsSource":
        known = set(self.columns)
        named = [*self.rules.not_null, *self.rules.non_negative, *self.rules.allowed_values,
                 *([self.key] if self.key else [])]
        unknown = [c for c in named if c not in known]
        if unknown:
            raise ValueError(f"rules or key name columns not in events.columns: {', '.join(unknown)}")
        not_timestamps = [c for c in self.timestamp_format if self.columns.get(c) != "timestamp"]
        if not_timestamps:
            raise ValueError(f"timestamp_format names columns that are not timestamp columns of "
                             f"events.columns: {', '.join(not_timestamps)}")
        layout = [k for k in ("header", "delimiter") if k in self.model_fields_set]
        if self.format != "csv" and layout:
            raise ValueError(f"{' and '.join(layout)} apply to format csv only (format is {self.format})")
        separators = [k for k in ("sep", "delimiter") if k in self.options]
        if self.delimiter is not None and separators:
            raise ValueError(f"delimiter and options.{separators[0]} both set the separator: keep delimiter")
        return self

    @property
    def field_pattern(self) -> str | None:
        """The regular expression lines are split on, or None when Spark's CSV reader splits them."""
        if isinstance(self.delimiter, DelimiterPattern):
            return self.delimiter.regex
        return NAMED_DELIMITERS.get(self.delimiter) if self.delimiter else None

    @property
    def separator(self) -> str:
        """The fixed separator of a CSV log (``delimiter``, else ``options.sep``, else ``,``)."""
        if isinstance(self.delimiter, str) and self.field_pattern is None:
            return self.delimiter
        return self.options.get("sep", self.options.get("delimiter", ","))

    @property
    def dedupe_columns(self) -> list[str]:
        """Columns whose repeated values quarantine every copy but the first; empty: no dedupe.

        ``rules.dedupe`` unset means: dedupe on ``key`` when the config names one, else keep exact
        duplicate rows (two identical purchases on one day are two purchases). ``dedupe: true``
        without a key dedupes exact rows (every column); ``dedupe: false`` keeps everything.
        """
        dedupe = self.rules.dedupe if self.rules.dedupe is not None else self.key is not None
        if not dedupe:
            return []
        return [self.key] if self.key else list(self.columns)


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
        return [check_identifier(n) for n in names]


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
    demographics_weight: float = Field(0.0, ge=0.0)
    als: AlsSettings = Field(default_factory=AlsSettings)
    top_titles: int = Field(10, ge=1, le=100)
    assigner: AssignerSettings = Field(default_factory=AssignerSettings)


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
            check_identifier(name)
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
            check_identifier(name)
        inputs = [self.text, *self.categorical, *self.numeric]
        if self.label in inputs or len(set(inputs)) != len(inputs):
            raise ValueError("label, text, categorical and numeric must name distinct columns")
        if self.positive_class == self.negative_class:
            raise ValueError("positive_class and negative_class must differ")
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train/validation/test fractions must add up to 1 (they add up to {total:g})")
        return self
