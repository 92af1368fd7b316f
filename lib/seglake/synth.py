"""Synthetic short-video interaction logs in the Douyin / ICME 2019 schema.

The generator plants *user* and *author* archetypes so that a segmentation
pipeline can be checked against ground truth, and can inject realistic
corruption so that validators can be checked against an exact count.

Model (all vectorised numpy, one pass per chunk)
------------------------------------------------
* Entities scale with ``events``: ~events/60 users, ~events/20 items,
  items/6 authors, 300 cities, max(100, items/10) music tracks, 10 devices,
  5 channels. They are drawn once from ``default_rng([seed, 2**32 - 1])``.
* Authors get an archetype (output, popularity multiplier, completion
  quality, mean duration). Item popularity is Zipf(1.1) over a random rank,
  times the author's multiplier. Each item has one author, music, city and
  duration.
* Users get an archetype (activity, exploration, personal pool size,
  completion, like and travel rates). Events pick their user with
  probability proportional to activity. An event's item comes either from
  global popularity (probability = exploration) or from a small personal
  pool of favourite authors derived by hashing the uid.
* ``time`` is strictly increasing with the row index and unique (except for
  the planted duplicate copies, which repeat their source row): the window
  is max(30 days, events) seconds, so up to 2,592,000 events span 30 days and
  larger datasets stretch the window (100M events ~ 3.2 years) rather than
  share seconds. Sharing seconds would make natural exact duplicates
  (same user re-watching a favourite within one second) frequent enough, at
  100M events, to break the "input = valid + corrupt" invariant.

Corruption
----------
``round(corrupt_rate * events)`` of the ``events`` data rows are corrupt,
spread evenly over chunks; every row has at most one defect. Kinds:
``null_id`` (uid or item_id null/empty), ``negative_duration``,
``flag_out_of_range`` (finish or like in {2, -1}), ``duplicate`` (exact copy
of a valid row of the same chunk; each source copied at most once) and, for
CSV only, ``malformed`` (fewer than 12 fields, or a garbage line without
commas) and ``wrong_type`` (a non-integer token such as ``abc``/``1.5e``).
Parquet columns are typed int64, so malformed/wrong-type rows cannot exist.

Determinism: same ``seed``, ``events``, ``fmt``, ``corrupt_rate`` and
``chunk_events`` give byte-identical files, whatever ``workers`` is: chunk
``i`` uses ``default_rng([seed, i])`` for data and ``[seed, i, 1]`` for
corruption.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time as _time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

COLUMNS = ("uid", "user_city", "item_id", "author_id", "item_city", "channel",
           "finish", "like", "music_id", "device", "time", "duration_time")
USER_ARCHETYPES = ("casual", "regular", "heavy", "binge_watcher", "liker", "explorer")
# share, activity median, activity sigma, exploration, pool authors, finish, like,
# travel, long tail (share of exploring draws uniform over items, not by popularity)
_USER_PARAMS = np.array([
    [0.35, 6.0, 0.6, 0.60, 4, 0.12, 0.010, 0.02, 0.00],    # casual
    [0.30, 35.0, 0.5, 0.50, 12, 0.32, 0.030, 0.03, 0.05],  # regular
    [0.10, 250.0, 0.5, 0.50, 25, 0.38, 0.030, 0.03, 0.05],  # heavy
    [0.08, 200.0, 0.5, 0.03, 3, 0.85, 0.040, 0.01, 0.00],  # binge_watcher
    [0.08, 45.0, 0.5, 0.50, 12, 0.38, 0.350, 0.03, 0.05],  # liker
    [0.09, 90.0, 0.5, 0.97, 40, 0.25, 0.030, 0.45, 0.60],  # explorer
])
AUTHOR_ARCHETYPES = ("hobbyist", "rising", "pro", "star")
# share, works median, popularity multiplier, completion quality, mean duration (s)
_AUTHOR_PARAMS = np.array([
    [0.60, 2.0, 0.3, 0.00, 9.0],    # hobbyist
    [0.25, 5.0, 1.0, 0.10, 10.0],   # rising
    [0.12, 15.0, 3.0, 0.20, 11.0],  # pro
    [0.03, 40.0, 12.0, 0.35, 12.0],  # star
])
PARQUET_KINDS = ("null_id", "negative_duration", "flag_out_of_range", "duplicate")
CSV_KINDS = PARQUET_KINDS + ("malformed", "wrong_type")
N_CITIES, N_DEVICES, N_CHANNELS = 300, 10, 5
T0 = 1_546_300_800                 # 2019-01-01T00:00:00Z
WINDOW = 30 * 86_400               # nominal log window in seconds
ITEM_ZIPF = 1.1
_CHANNEL_CUM = np.cumsum([0.55, 0.2, 0.12, 0.08, 0.05])
_ENTITY_STREAM = 2**32 - 1         # never a chunk index, so never a chunk stream
_GARBAGE = (b"ERROR upstream timeout", b"<html>502 Bad Gateway</html>", b"~~~ truncated ~~~")
_BAD_TOKENS = (b"abc", b"1.5e", b"12x", b"0x1F")
_HEADER = (",".join(COLUMNS) + "\n").encode()


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote (entity counts are those present in valid rows)."""

    events: int
    users: int
    authors: int
    items: int
    corrupt_rows: int
    files: list[str]
    seconds: float


@dataclass(frozen=True)
class _World:
    """Entity tables shared by all chunks (items are contiguous per author)."""

    user_arch: np.ndarray
    user_cum: np.ndarray
    home_city: np.ndarray
    user_device: np.ndarray
    author_arch: np.ndarray
    author_cum: np.ndarray
    author_start: np.ndarray
    author_items: np.ndarray
    item_cum: np.ndarray
    item_author: np.ndarray
    item_id: np.ndarray
    item_music: np.ndarray
    item_city: np.ndarray
    item_dur: np.ndarray


def _zipf_cum(n: int, s: float) -> np.ndarray:
    """Cumulative Zipf(s) weights over ranks 1..n (index 0 is the most popular)."""
    return np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: map uniforms in [0, 1) to indices weighted by ``cum``."""
    idx = np.searchsorted(cum, u * cum[-1], side="right")
    return np.minimum(idx, cum.size - 1)  # u*total may round up to total


def _hash_uniform(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Stateless uniform in [0, 1) from (a, b, salt), splitmix64-style.

    Favourite authors must be a fixed function of the uid so that every
    chunk (and worker) agrees on a user's personal pool without shared state.
    """
    x = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= (b.astype(np.uint64) + np.uint64(salt % 2**61)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _build_world(events: int, seed: int) -> _World:
    """Draw users, authors and items; sizes scale with ``events``."""
    rng = np.random.default_rng([seed, _ENTITY_STREAM])
    n_users = max(50, round(events / 60))
    n_items = max(60, round(events / 20))
    n_authors = max(10, n_items // 6)
    city_cum = _zipf_cum(N_CITIES, 0.8)
    a_arch = rng.choice(len(AUTHOR_ARCHETYPES), n_authors, p=_AUTHOR_PARAMS[:, 0])
    ap = _AUTHOR_PARAMS[a_arch]
    works = ap[:, 1] * rng.lognormal(0.0, 0.6, n_authors)
    # every author owns >= 1 item; the rest is shared in proportion to output
    counts = 1 + rng.multinomial(n_items - n_authors, works / works.sum())
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    author_city = _draw(city_cum, rng.random(n_authors))
    item_author = np.repeat(np.arange(n_authors), counts)
    rank = rng.permutation(n_items) + 1.0
    pop = rank**-ITEM_ZIPF * ap[item_author, 2]
    n_music = max(100, n_items // 10)
    item_music = _draw(_zipf_cum(n_music, 1.0), rng.random(n_items))
    # items are shot mostly in their author's city
    item_city = np.where(rng.random(n_items) < 0.9, author_city[item_author],
                         rng.integers(0, N_CITIES, n_items))
    mean_dur = ap[item_author, 4]
    dur = 5.0 + rng.gamma(2.0, (mean_dur - 5.0) / 2.0)
    u_arch = rng.choice(len(USER_ARCHETYPES), n_users, p=_USER_PARAMS[:, 0])
    up = _USER_PARAMS[u_arch]
    activity = up[:, 1] * rng.lognormal(0.0, up[:, 2])
    return _World(
        user_arch=u_arch, user_cum=np.cumsum(activity),
        home_city=_draw(city_cum, rng.random(n_users)),
        user_device=_draw(_zipf_cum(N_DEVICES, 1.0), rng.random(n_users)),
        author_arch=a_arch,
        author_cum=np.cumsum(np.bincount(item_author, weights=pop, minlength=n_authors)),
        author_start=start, author_items=counts,
        item_cum=np.cumsum(pop), item_author=item_author,
        item_id=rng.permutation(n_items),  # public ids hide the per-author layout
        item_music=item_music, item_city=item_city,
        item_dur=np.clip(np.rint(dur), 5, 60).astype(np.int64))


def _clean_chunk(w: _World, seed: int, index: int, start: int, n: int, events: int):
    """Generate rows ``start .. start+n`` (internal item index + output columns)."""
    rng = np.random.default_rng([seed, index])
    user = _draw(w.user_cum, rng.random(n))
    p = _USER_PARAMS[w.user_arch[user]]
    explore = rng.random(n) < p[:, 3]
    item = np.empty(n, np.int64)
    glob, pool = np.flatnonzero(explore), np.flatnonzero(~explore)
    tail = rng.random(glob.size) < p[glob, 8]  # explorers dig into the long tail
    item[glob] = np.where(tail, rng.integers(0, w.item_author.size, glob.size),
                          _draw(w.item_cum, rng.random(glob.size)))
    # personal pool: slot -> favourite author (hash of uid) -> one of its items
    slot = (rng.random(pool.size) * p[pool, 4]).astype(np.int64)
    fav = _draw(w.author_cum, _hash_uniform(user[pool], slot, seed))
    item[pool] = w.author_start[fav] + (rng.random(pool.size) * w.author_items[fav]).astype(np.int64)
    author = w.item_author[item]
    dur = w.item_dur[item]
    quality = _AUTHOR_PARAMS[w.author_arch[author], 3]
    # good authors lift completion (relative, so archetypes keep their order);
    # long videos are finished less often
    p_fin = np.clip(p[:, 5] * (1 + quality) - 0.005 * (dur - 11), 0.01, 0.97)
    finish = rng.random(n) < p_fin
    like = rng.random(n) < p[:, 6] * np.where(finish, 1.4, 0.6)
    travel = rng.random(n) < p[:, 7]
    user_city = np.where(travel, rng.integers(0, N_CITIES, n), w.home_city[user])
    device = np.where(rng.random(n) < 0.03, rng.integers(0, N_DEVICES, n), w.user_device[user])
    channel = _draw(_CHANNEL_CUM, rng.random(n))
    # spacing >= 1 s and jitter < spacing - 1 keep floor(time) strictly increasing
    spacing = max(WINDOW, events) / events
    pos = np.arange(start, start + n, dtype=np.float64)
    t = T0 + np.floor(pos * spacing + rng.random(n) * (spacing - 1.0)).astype(np.int64)
    cols = dict(uid=user, user_city=user_city, item_id=w.item_id[item], author_id=author,
                item_city=w.item_city[item], channel=channel, finish=finish, like=like,
                music_id=w.item_music[item], device=device, time=t, duration_time=dur)
    return item, {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}


def _corrupt(cols: dict, n: int, k: int, kinds: tuple, rng: np.random.Generator):
    """Plant ``k`` corrupt rows in place; return (bad mask, null masks, counts, csv edits)."""
    bad = np.zeros(n, bool)
    nulls = {c: np.zeros(n, bool) for c in ("uid", "item_id")}
    counts = np.zeros(len(kinds), np.int64)
    if k == 0:
        return bad, nulls, counts, None
    pos = rng.choice(n, size=k, replace=False)
    kind = rng.integers(0, len(kinds), k)
    bad[pos] = True
    clean = np.flatnonzero(~bad)
    dup = np.flatnonzero(kind == kinds.index("duplicate"))
    if dup.size > clean.size:  # tiny chunk: not enough valid rows to copy
        kind[dup[clean.size:]] = kinds.index("negative_duration")
        dup = dup[:clean.size]
    src = rng.choice(clean, size=dup.size, replace=False)  # each source copied once
    for col in cols.values():
        col[pos[dup]] = col[src]
    sel = pos[kind == kinds.index("null_id")]
    which = rng.random(sel.size) < 0.5
    nulls["uid"][sel[which]] = True
    nulls["item_id"][sel[~which]] = True
    sel = pos[kind == kinds.index("negative_duration")]
    cols["duration_time"][sel] *= -1  # durations are >= 5, so the result is <= -5
    sel = pos[kind == kinds.index("flag_out_of_range")]
    on_like = rng.random(sel.size) < 0.5
    value = np.where(rng.random(sel.size) < 0.5, 2, -1)
    cols["like"][sel[on_like]] = value[on_like]
    cols["finish"][sel[~on_like]] = value[~on_like]
    counts[:] = np.bincount(kind, minlength=len(kinds))
    edits = None
    if "malformed" in kinds:  # text-level defects are spliced in after CSV encoding
        m = np.isin(kind, [kinds.index("malformed"), kinds.index("wrong_type")])
        order = np.argsort(pos[m])
        e_pos, e_malformed = pos[m][order], (kind[m] == kinds.index("malformed"))[order]
        # malformed: param 0 -> garbage line, 1..11 -> keep that many fields
        e_param = np.where(e_malformed, rng.integers(0, 12, e_pos.size),
                           rng.integers(0, len(COLUMNS), e_pos.size))
        e_token = rng.integers(0, max(len(_GARBAGE), len(_BAD_TOKENS)), e_pos.size)
        edits = (e_pos, e_malformed, e_param, e_token)
    return bad, nulls, counts, edits


def _splice(body: bytes, edits) -> bytes:
    """Replace the CSV lines of malformed / wrong-type rows (few rows: a loop is fine)."""
    nl = np.flatnonzero(np.frombuffer(body, np.uint8) == 10)
    starts = np.concatenate(([0], nl[:-1] + 1))
    pieces, prev = [], 0
    for row, malformed, param, token in zip(*edits):
        s, e = int(starts[row]), int(nl[row])
        fields = body[s:e].split(b",")
        if malformed:
            new = _GARBAGE[token % len(_GARBAGE)] if param == 0 else b",".join(fields[:param])
        else:
            fields[param] = _BAD_TOKENS[token % len(_BAD_TOKENS)]
            new = b",".join(fields)
        pieces += [body[prev:s], new]
        prev = e
    pieces.append(body[prev:])
    return b"".join(pieces)


def _run_chunk(w: _World, job: dict, task: tuple):
    """Generate, corrupt and write one chunk; return counts and presence bitmaps."""
    index, start, n, k = task
    seed, fmt = job["seed"], job["fmt"]
    item, cols = _clean_chunk(w, seed, index, start, n, job["events"])
    bad, nulls, counts, edits = _corrupt(cols, n, k, job["kinds"],
                                         np.random.default_rng([seed, index, 1]))
    table = pa.table({c: pa.array(cols[c], mask=nulls.get(c)) for c in COLUMNS})
    path = Path(job["events_dir"]) / f"part-{index:05d}.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, compression="snappy")
    else:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        body = sink.getvalue().to_pybytes()
        path.write_bytes(_HEADER + (_splice(body, edits) if edits else body))
    ok = ~bad  # presence counts only rows a validator keeps

    def bits(ids: np.ndarray, size: int) -> np.ndarray:
        seen = np.zeros(size, bool)
        seen[ids] = True
        return np.packbits(seen)

    return (counts, bits(cols["uid"][ok], w.user_arch.size),
            bits(cols["author_id"][ok], w.author_arch.size), bits(item[ok], w.item_author.size))


_STATE: tuple | None = None  # (world, job) inside pool workers


def _init_worker(job: dict) -> None:
    # rebuilding the world from the seed is cheaper than pickling it to workers
    global _STATE
    _STATE = (_build_world(job["events"], job["seed"]), job)


def _pool_task(task: tuple):
    return _run_chunk(_STATE[0], _STATE[1], task)


def _write_truth(out: Path, names: tuple, arch: np.ndarray, packed: np.ndarray, key: str) -> None:
    """Write ``key,archetype`` for the entities present, in id order."""
    ids = np.flatnonzero(np.unpackbits(packed, count=arch.size))
    table = pa.table({key: ids, "archetype": np.asarray(names)[arch[ids]]})
    sink = pa.BufferOutputStream()  # own header: pyarrow would quote the names
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    out.write_bytes(f"{key},archetype\n".encode() + sink.getvalue().to_pybytes())


def generate(out_dir: str | Path, events: int, *, fmt: str = "parquet", seed: int = 0,
             corrupt_rate: float = 0.0, chunk_events: int = 1_000_000,
             workers: int = 1) -> SynthSummary:
    """Write a synthetic interaction log plus ground truth.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``events/part-NNNNN.{parquet,csv}`` and ``truth/``
        (``users.csv``, ``authors.csv``, ``corrupt_rows.txt``, ``manifest.json``).
        Stale ``events/part-*`` files are removed first.
    events : int
        Total data rows written, corrupt rows included (>= 1).
    fmt : {"parquet", "csv"}
        Parquet has int64 columns; CSV part files each start with a header.
    seed : int
        Non-negative seed; output is byte-identical for equal arguments.
    corrupt_rate : float
        Fraction in [0, 0.5] of rows that a validator must reject.
    chunk_events : int
        Rows per part file (the last one is smaller).
    workers : int
        Processes generating chunks in parallel; does not change the output.

    Returns
    -------
    SynthSummary
        Counts of rows and of users/authors/items present in valid rows.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    if events < 1 or chunk_events < 1 or workers < 1 or seed < 0:
        raise ValueError("events, chunk_events and workers must be >= 1, seed >= 0")
    if not 0.0 <= corrupt_rate <= 0.5:
        raise ValueError("corrupt_rate must be within [0, 0.5]")
    began = _time.perf_counter()
    out = Path(out_dir)
    events_dir, truth_dir = out / "events", out / "truth"
    events_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    for stale in list(events_dir.glob("part-*.parquet")) + list(events_dir.glob("part-*.csv")):
        stale.unlink()
    kinds = CSV_KINDS if fmt == "csv" else PARQUET_KINDS
    total_bad = int(round(corrupt_rate * events))
    starts = range(0, events, chunk_events)
    # integer apportioning spreads corrupt rows evenly and sums exactly to total_bad
    tasks = [(i, s, min(chunk_events, events - s),
              total_bad * min(s + chunk_events, events) // events - total_bad * s // events)
             for i, s in enumerate(starts)]
    job = dict(seed=seed, fmt=fmt, events=events, kinds=kinds, events_dir=str(events_dir))
    world = _build_world(events, seed)
    if workers == 1 or len(tasks) == 1:
        results = [_run_chunk(world, job, t) for t in tasks]
    else:
        # spawn: never fork a process that may already run Arrow threads. The
        # executor (unlike mp.Pool) raises if workers die, e.g. when an unguarded
        # script (no `if __name__ == "__main__":`) calls generate().
        with ProcessPoolExecutor(min(workers, len(tasks)), mp.get_context("spawn"),
                                 _init_worker, (job,)) as pool:
            results = list(pool.map(_pool_task, tasks))
    counts = np.sum([r[0] for r in results], axis=0)
    users, authors, items = (np.bitwise_or.reduce([r[j] for r in results]) for j in (1, 2, 3))
    _write_truth(truth_dir / "users.csv", USER_ARCHETYPES, world.user_arch, users, "uid")
    _write_truth(truth_dir / "authors.csv", AUTHOR_ARCHETYPES, world.author_arch, authors,
                 "author_id")
    (truth_dir / "corrupt_rows.txt").write_text(f"{int(counts.sum())}\n")
    files = [events_dir / f"part-{t[0]:05d}.{fmt}" for t in tasks]
    n_users, n_authors, n_items = (int(np.unpackbits(b).sum()) for b in (users, authors, items))
    manifest = dict(events=events, seed=seed, fmt=fmt, corrupt_rate=corrupt_rate,
                    corrupt_rows=int(counts.sum()),
                    corruption={k: int(c) for k, c in zip(kinds, counts)},
                    chunk_events=chunk_events, files=[f"events/{f.name}" for f in files],
                    users=n_users, authors=n_authors, items=n_items,
                    time_window_seconds=max(WINDOW, events))
    (truth_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return SynthSummary(events=events, users=n_users, authors=n_authors, items=n_items,
                        corrupt_rows=int(counts.sum()), files=[str(f) for f in files],
                        seconds=_time.perf_counter() - began)
