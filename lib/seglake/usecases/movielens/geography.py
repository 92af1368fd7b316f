"""The seed's geography: each user's US state from their zip code, offline.

The seed joined ``u.user``'s zip codes with a downloaded zip table (simplemaps) and silently lost
every user it could not place. Here the table is the ``zipcodes`` package's (about 42,800 US zip
codes, shipped as data inside the wheel: no network at run time), joined in Spark, and a user who
cannot be placed keeps a named value instead of vanishing from the shares:

- ``FOREIGN``: a Canadian postal code (letter, digit, letter: ml-100k has 18, truncated to 5
  characters like ``T8H1N``);
- ``UNKNOWN``: five digits (or ZIP+4) that are not in the table, e.g. ``00000`` or the retired
  Boston-area ``02154``;
- ``MALFORMED``: anything else, including an empty value.

Military (``AA``, ``AE``, ``AP``) and territory (``PR``, ``GU``, ...) codes count as states, as the
US Postal Service lists them.
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

FOREIGN = "foreign (Canadian) postal code"
UNKNOWN = "unknown US zip code"
MALFORMED = "malformed zip code"
UNMATCHED = (FOREIGN, UNKNOWN, MALFORMED)
US_ZIP = r"^[0-9]{5}(-[0-9]{4})?$"
CANADIAN = r"^[A-Za-z][0-9][A-Za-z]"


@functools.cache
def zip_states() -> tuple[tuple[str, str], ...]:
    """Every ``(zip_code, state)`` pair of the ``zipcodes`` package (imported on first use).

    >>> dict(zip_states())["85711"], len(zip_states()) > 40_000
    ('AZ', True)
    """
    import zipcodes

    return tuple(sorted((z["zip_code"], z["state"]) for z in zipcodes.list_all()))


def zip5(zip_code: Column) -> Column:
    """The five-digit zip of a US zip or ZIP+4 (spaces trimmed); null for anything else."""
    text = F.trim(zip_code)
    return F.when(text.rlike(US_ZIP), F.substring(text, 1, 5))


def with_state(spark: SparkSession, users: DataFrame) -> DataFrame:
    """``users`` with a ``state`` column: the two-letter state of ``zip_code``, or a value of
    :data:`UNMATCHED` saying why there is none (never null).

    The zip table goes to the executors once, as a broadcast join.

    Parameters
    ----------
    spark : SparkSession
    users : DataFrame
        With a string ``zip_code``.

    Returns
    -------
    DataFrame
        ``users``' columns and ``state``.

    Examples
    --------
    >>> users = spark.createDataFrame([(1, "85711"), (2, "T8H1N"), (3, "00000"), (4, "N/A"),
    ...                                (5, " 10003-1234"), (6, None)], "user_id int, zip_code string")
    >>> [(r.user_id, r.state) for r in with_state(spark, users).orderBy("user_id").collect()]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(1, 'AZ'), (2, 'foreign (Canadian) postal code'), (3, 'unknown US zip code'),
     (4, 'malformed zip code'), (5, 'NY'), (6, 'malformed zip code')]
    """
    lookup = spark.createDataFrame(list(zip_states()), "_zip5 string, _zip_state string")
    keyed = users.withColumn("_zip5", zip5(F.col("zip_code")))
    joined = keyed.join(F.broadcast(lookup), "_zip5", "left")
    state = (F.when(F.col("_zip_state").isNotNull(), F.col("_zip_state"))
             .when(F.col("_zip5").isNotNull(), F.lit(UNKNOWN))
             .when(F.trim("zip_code").rlike(CANADIAN), F.lit(FOREIGN))
             .otherwise(F.lit(MALFORMED)))
    return joined.withColumn("state", state).drop("_zip5", "_zip_state")
