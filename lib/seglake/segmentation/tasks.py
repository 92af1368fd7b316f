"""One Spark task per key: ``groupBy(...).applyInPandas`` with the keys spread over the cores.

Density's UMAP/HDBSCAN fits and refits, its surrogates, explain's targets and the KMeans segments'
stability refits are a few heavy pandas UDF calls each; :func:`apply_per_key` plans them onto
partitions so that they run side by side instead of one after another in one task.
"""

from __future__ import annotations

import functools

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

SLOT = "_slot"



def spark_partition_of(value: int, partitions: int) -> int:
    """The partition ``repartition(partitions, col)`` sends an int ``value`` of ``col`` to.

    Spark's hash partitioning is pmod(Murmur3 hash with seed 42, partitions), the hash of ``F.hash``;
    bucketed tables depend on it staying so.

    Examples
    --------
    >>> values = spark.range(6).select(F.col("id").cast("int").alias("v"))
    >>> spread = values.repartition(4, "v").select("v", F.spark_partition_id().alias("p")).collect()
    >>> all(spark_partition_of(row.v, 4) == row.p for row in spread)
    True
    """
    def rotate(x: int, bits: int) -> int:
        return ((x << bits) | (x >> (32 - bits))) & 0xFFFFFFFF

    k = rotate((value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h = (rotate(42 ^ k, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h ^= 4  # the input's length in bytes
    h = (h ^ (h >> 16)) * 0x85EBCA6B & 0xFFFFFFFF
    h = (h ^ (h >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
    h ^= h >> 16
    return (h - (1 << 32) if h >= 1 << 31 else h) % partitions


def plan_partitions(weights: dict[tuple, float], partitions: int) -> dict[tuple, int]:
    """Keys to partitions, heaviest key first onto the least loaded partition (ties: lowest key).

    Examples
    --------
    >>> plan_partitions({(0, 0): 10.0, (0, 1): 5.0}, 2)  # a main fit and its stability refit
    {(0, 0): 0, (0, 1): 1}
    >>> plan_partitions({(g,): w for g, w in enumerate([9, 5, 4, 3, 1])}, 2)
    {(0,): 0, (1,): 1, (2,): 1, (3,): 0, (4,): 1}
    """
    loads, planned = [0.0] * partitions, {}
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        target = min(range(partitions), key=lambda p: (loads[p], p))
        loads[target] += weights[key]
        planned[key] = target
    return planned


def _without_slot(rows: pd.DataFrame, body) -> pd.DataFrame:
    return body(rows.drop(columns=SLOT))


def apply_per_key(frame: DataFrame, keys: list[str], weights: dict[tuple, float], body,
                  schema) -> DataFrame:
    """``frame.groupBy(*keys).applyInPandas(body, schema)`` with the keys spread over the cores.

    With adaptive execution on, the shuffle before a grouped pandas UDF is coalesced into as few
    partitions as its size allows (no smaller than ``coalescePartitions.minPartitionSize``, 1 MB): a
    sample of a few MB becomes one partition or a few, each holding several keys whose model fits
    then run one after another in one task while other cores idle. Here each key is planned
    onto one of ``min(#keys, 2 × defaultParallelism)`` partitions (:func:`plan_partitions`, by
    ``weights``, the expected cost of each key), and a ``_slot`` column whose hash lands on that
    partition routes its rows there through an explicit ``repartition(n, _slot)``, which adaptive
    execution leaves alone. Grouping by (``_slot``, keys) then needs no other shuffle; ``body`` sees
    the rows without ``_slot``. Rows of a key missing from ``weights`` go to partition 0.

    ``body`` must not depend on the order of its rows (the bodies here sort by ``entity_id``).

    Examples
    --------
    >>> from pyspark import TaskContext
    >>> def where(rows):
    ...     return pd.DataFrame({"g": [int(rows["g"].iloc[0])],
    ...                          "partition": [TaskContext.get().partitionId()]})
    >>> frame = spark.createDataFrame([(g, float(i)) for g in range(3) for i in range(5)], "g int, v double")
    >>> done = apply_per_key(frame, ["g"], {(0,): 2.0, (1,): 1.0, (2,): 1.0}, where, "g int, partition int")
    >>> sorted(tuple(row) for row in done.collect())  # 2 cores: 3 keys on 3 partitions, g 0 first
    [(0, 0), (1, 1), (2, 2)]
    """
    spark = frame.sparkSession
    weights = {tuple(k.item() if hasattr(k, "item") else k for k in key): w for key, w in weights.items()}
    partitions = max(1, min(len(weights), spark.sparkContext.defaultParallelism * 2))
    route: dict[int, int] = {}  # partition → a _slot value that hashes to it
    value = 0
    while len(route) < partitions:
        route.setdefault(spark_partition_of(value, partitions), value)
        value += 1
    slots = spark.createDataFrame(
        [(*key, route[p]) for key, p in plan_partitions(weights, partitions).items()],
        T.StructType([*(frame.schema[k] for k in keys), T.StructField(SLOT, T.IntegerType())]))
    routed = (frame.join(F.broadcast(slots), keys, "left")
              .withColumn(SLOT, F.coalesce(F.col(SLOT), F.lit(route[0]))))
    return (routed.repartition(partitions, SLOT).groupBy(SLOT, *keys)
            .applyInPandas(functools.partial(_without_slot, body=body), schema))
