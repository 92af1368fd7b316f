"""The time basis of time-aware features: which events column is each event's time, and ``as_of``.

Time-aware features (``recency_days``, ``tenure_days``, ``events_per_active_day``, ``min`` / ``max``
of a timestamp, any feature with a ``window``) are measured in days before one moment, ``as_of``:
``features.as_of`` when configured, else the latest time in the events (one small aggregate). Times
of every kind become microseconds since the Unix epoch, so a window is one comparison per event
inside the features' single aggregation pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import FeaturesConfig, require_columns
from seglake.core.config.stages import TIME_AGGS
from seglake.core.errors import SeglakeError

MICROS_PER_DAY = 86_400 * 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                 T.DecimalType)
TIME_TYPES = (T.TimestampType, T.TimestampNTZType, T.DateType)
# Columns ingest adds to bronze/events: its own timestamps are never the event time.
_BOOKKEEPING = "_ingest_"


def _col(name: str) -> Column:
    """A column by its exact name: backticks stop Spark from reading dots or ``#`` as syntax."""
    return F.col("`" + name.replace("`", "``") + "`")


def _micros(value: Column, kind: T.DataType) -> Column:
    """Microseconds since the Unix epoch of a timestamp, a date (its UTC midnight) or unix seconds."""
    if isinstance(kind, T.DateType):
        return F.unix_date(value).cast("long") * MICROS_PER_DAY
    if isinstance(kind, T.TimestampNTZType):  # wall time read in the session's zone (UTC in seglake)
        return F.unix_micros(value.cast("timestamp"))
    if isinstance(kind, T.TimestampType):
        return F.unix_micros(value)
    return value.cast("double") * 1_000_000


@dataclass(frozen=True)
class EventTime:
    """Which events column holds each event's time, and the moment time-aware features are measured at.

    Examples
    --------
    >>> basis = EventTime("t", T.LongType(), datetime(1970, 1, 2, tzinfo=timezone.utc), from_config=True)
    >>> basis.as_of_micros, basis.describe()
    (86400000000, "as of 1970-01-02T00:00:00Z (features.as_of, time 't')")
    """

    column: str
    kind: T.DataType
    as_of: datetime
    from_config: bool

    @property
    def as_of_micros(self) -> int:
        """``as_of`` in microseconds since the epoch (exact, as an integer)."""
        return (self.as_of - EPOCH) // timedelta(microseconds=1)

    def describe(self) -> str:
        """One phrase for the stage message: the moment, where it came from and the time column."""
        origin = "features.as_of" if self.from_config else "latest event"
        return f"as of {self.as_of.strftime('%Y-%m-%dT%H:%M:%S')}Z ({origin}, time '{self.column}')"

    def days_before(self, value: Column, kind: T.DataType) -> Column:
        """How many days (a double) a time lies before ``as_of``."""
        return (F.lit(self.as_of_micros) - _micros(value, kind)) / MICROS_PER_DAY

    def within(self, days: int) -> Column:
        """True for an event less than ``days`` days before ``as_of`` (not after it); null without a time."""
        age = F.lit(self.as_of_micros) - _micros(_col(self.column), self.kind)
        return (age >= 0) & (age < days * MICROS_PER_DAY)

    def not_after(self) -> Column:
        """True for an event at or before ``as_of``, or without a time."""
        event = _micros(_col(self.column), self.kind)
        return event.isNull() | (event <= F.lit(self.as_of_micros))


def _is_time_aware(features: FeaturesConfig, types: dict[str, T.DataType]) -> bool:
    return features.as_of is not None or any(
        spec.agg in TIME_AGGS or spec.window is not None
        or (spec.agg in {"min", "max"} and isinstance(types.get(spec.column), TIME_TYPES))
        for spec in features.definitions.values())


def time_column(events: DataFrame, features: FeaturesConfig) -> str:
    """The events column holding each event's time: ``features.time_column``, else the one timestamp
    or date column of the events, else the one column ``active_days`` features count days of.

    Raises
    ------
    SeglakeError
        ``features.time_column`` is missing or not a time, or no single column qualifies.

    Examples
    --------
    >>> events = spark.createDataFrame([], "uid long, paid timestamp, shipped timestamp")
    >>> time_column(events, FeaturesConfig(time_column="paid"))
    'paid'
    >>> time_column(events, FeaturesConfig())  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: features.time_column: the events have several time columns
    (paid, shipped); name the one holding each event's time
    """
    types = {f.name: f.dataType for f in events.schema.fields}
    if features.time_column:
        name = features.time_column
        require_columns(events.columns, [name], "features.time_column", "bronze/events")
        if not isinstance(types[name], (*NUMERIC_TYPES, *TIME_TYPES)):
            raise SeglakeError(f"features.time_column: '{name}' is {types[name].simpleString()}; the "
                               "event time must be a timestamp, a date or unix seconds")
        return name
    stamps = [n for n, kind in types.items() if isinstance(kind, TIME_TYPES) and not n.startswith(_BOOKKEEPING)]
    if len(stamps) == 1:
        return stamps[0]
    if stamps:
        raise SeglakeError(f"features.time_column: the events have several time columns "
                           f"({', '.join(stamps)}); name the one holding each event's time")
    days = sorted({s.column for s in features.definitions.values() if s.agg == "active_days"})
    if len(days) == 1:
        return days[0]
    raise SeglakeError("features.time_column: the events have no timestamp or date column; name the "
                       "column holding each event's time (a timestamp, a date or unix seconds)")


def event_time(events: DataFrame, features: FeaturesConfig) -> EventTime | None:
    """The time basis of the time-aware features, or None when no feature is time-aware.

    ``as_of`` is ``features.as_of``, else the latest time in the events' time column: one small
    aggregate (a Spark job) over the events.

    Raises
    ------
    SeglakeError
        No time column qualifies (:func:`time_column`), or ``as_of`` must default and the
        events hold no time.

    Examples
    --------
    >>> events = spark.createDataFrame([(1, 0), (1, 86_400), (2, 43_200)], "uid long, t long")
    >>> features = FeaturesConfig(time_column="t", definitions={"recency": {"agg": "recency_days"}})
    >>> event_time(events, features).as_of.isoformat()
    '1970-01-02T00:00:00+00:00'
    """
    types = {f.name: f.dataType for f in events.schema.fields}
    if not _is_time_aware(features, types):
        if features.time_column:
            time_column(events, features)  # a misspelt key is an error even when nothing uses it
        return None
    column = time_column(events, features)
    kind = types[column]
    if features.as_of is not None:
        return EventTime(column, kind, features.as_of, from_config=True)
    latest = events.agg(F.max(_micros(_col(column), kind)).cast("long").alias("latest")).first().latest
    if latest is None:
        raise SeglakeError(f"features.as_of: the events hold no time in '{column}' to measure from; "
                           "set features.as_of")
    return EventTime(column, kind, EPOCH + timedelta(microseconds=int(latest)), from_config=False)
