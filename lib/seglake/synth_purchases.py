"""Synthetic purchase logs with planted RFM archetypes (``seglake synth --log purchases``).

A purchase log is ``customer_id, time, quantity, amount``, one row per order: what recency,
frequency, monetary and tenure features (``conf/rfm.yaml``) are computed from. Every customer gets
one of four archetypes, which fix when its orders fall and how large they are:

============================  =====  =======================  ======================  ==========
archetype                     share  first order (days ago)   last order (days ago)   order size
============================  =====  =======================  ======================  ==========
``loyal_big_spender``         0.20   400 .. 720               0 .. 7                  ~120, every ~10 days
``new_customer``              0.20   3 .. 45                  0 .. 10                 ~40, 1 to 3 orders
``lapsed``                    0.25   400 .. 720               150 .. 350              ~50, every ~25 days
``occasional_small_buyer``    0.35   200 .. 720               15 .. 90                ~8, every ~60 days
============================  =====  =======================  ======================  ==========

"Days ago" counts back from :data:`END` (2024-12-31T00:00Z); the log's latest order is within a
few days of it, so features measured as of the latest event see these ranges. Orders between the
first and the last are uniform in time; amounts are lognormal around the archetype's size
(sigma 0.35), quantities 1 + Poisson. Same ``customers`` and ``seed``: byte-identical files.
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ARCHETYPES = ("loyal_big_spender", "new_customer", "lapsed", "occasional_small_buyer")
# share, first order (days ago) low/high, last order low/high, days between orders
# (0: 1 to 3 orders), median amount, mean extra quantity
_PARAMS = np.array([
    [0.20, 400, 720, 0, 7, 10, 120.0, 2.0],    # loyal_big_spender
    [0.20, 3, 45, 0, 10, 0, 40.0, 1.0],        # new_customer
    [0.25, 400, 720, 150, 350, 25, 50.0, 1.0],  # lapsed
    [0.35, 200, 720, 15, 90, 60, 8.0, 0.2],    # occasional_small_buyer
])
END = datetime(2024, 12, 31, tzinfo=timezone.utc)
_MICROS_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class PurchasesSummary:
    """What :func:`generate_purchases` wrote."""

    customers: int
    orders: int
    latest: datetime
    files: list[str]
    seconds: float


def _orders(rng: np.random.Generator, arch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: the age (days before END) of its first and last order, and its order count."""
    p = _PARAMS[arch]
    first = rng.uniform(p[:, 1], p[:, 2])
    last = np.minimum(rng.uniform(p[:, 3], p[:, 4]), first)  # a new customer's last is not before its first
    gap = p[:, 5]
    span = first - last
    regular = 2 + rng.poisson(np.where(gap > 0, span / np.maximum(gap, 1), 0))
    count = np.where(gap > 0, regular, rng.integers(1, 4, arch.size))
    return first, last, count


def generate_purchases(out_dir: str | Path, customers: int, *, seed: int = 0) -> PurchasesSummary:
    """Write a purchase log with planted RFM archetypes plus the truth per customer.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``events/part-00000.parquet`` (``customer_id`` int64, ``time`` UTC timestamp,
        ``quantity`` int64, ``amount`` double; rows in time order) and ``truth/``
        (``customers.csv`` with ``customer_id,archetype``, and ``manifest.json``).
    customers : int
        Customers drawn (>= 4); each places at least one order.
    seed : int
        Non-negative seed; equal arguments give byte-identical files.

    Returns
    -------
    PurchasesSummary
        Customers, orders, the latest order time and the files written.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> summary = generate_purchases(folder, 40, seed=1)
    >>> truth = pd.read_csv(f"{folder}/truth/customers.csv")
    >>> len(truth) == summary.customers == 40, set(truth.archetype) <= set(ARCHETYPES)
    (True, True)
    """
    if customers < 4 or seed < 0:
        raise ValueError("customers must be >= 4 and seed >= 0")
    began = _time.perf_counter()
    rng = np.random.default_rng([seed, 0x5EC1A4E])
    arch = rng.choice(len(ARCHETYPES), customers, p=_PARAMS[:, 0])
    ids = rng.permutation(customers) + 1  # public ids do not reveal the archetype order
    first, last, count = _orders(rng, arch)
    owner = np.repeat(np.arange(customers), count)
    # Order k of n: the first, the last, and uniform draws in between.
    rank = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    between = rng.uniform(last[owner], first[owner])
    age = np.where(rank == 0, first[owner],
                   np.where(rank == count[owner] - 1, last[owner], between))
    p = _PARAMS[arch[owner]]
    amount = np.round(p[:, 6] * rng.lognormal(0.0, 0.35, owner.size), 2)
    quantity = 1 + rng.poisson(p[:, 7])
    end_micros = (END - datetime(1970, 1, 1, tzinfo=timezone.utc)).days * _MICROS_PER_DAY
    when = end_micros - np.round(age * _MICROS_PER_DAY).astype(np.int64)
    order = np.argsort(when, kind="stable")
    table = pa.table({
        "customer_id": pa.array(ids[owner][order], pa.int64()),
        "time": pa.array(when[order], pa.timestamp("us", tz="UTC")),
        "quantity": pa.array(quantity[order], pa.int64()),
        "amount": pa.array(amount[order], pa.float64()),
    })
    out = Path(out_dir)
    events_dir, truth_dir = out / "events", out / "truth"
    events_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    for stale in events_dir.glob("part-*.parquet"):
        stale.unlink()
    path = events_dir / "part-00000.parquet"
    pq.write_table(table, path, compression="snappy")
    by_id = np.argsort(ids)
    rows = "".join(f"{ids[i]},{ARCHETYPES[arch[i]]}\n" for i in by_id)
    (truth_dir / "customers.csv").write_text("customer_id,archetype\n" + rows)
    latest = table.column("time")[-1].as_py()
    manifest = dict(customers=customers, orders=int(owner.size), seed=seed, end=END.isoformat(),
                    latest=latest.isoformat(), files=[f"events/{path.name}"],
                    archetypes={name: int((arch == i).sum()) for i, name in enumerate(ARCHETYPES)})
    (truth_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return PurchasesSummary(customers=customers, orders=int(owner.size), latest=latest,
                            files=[str(path)], seconds=_time.perf_counter() - began)
