"""Short names for segments and clusters ("high f0, few authors"), built from their SHAP ranking.

The rule is general and deterministic, since seglake cannot know a noun for every user's feature:

1. Candidates: a target's features in SHAP rank order, leaving out those with under a tenth of the
   best one's mean |SHAP| (the same cut as the description sentence), at most :data:`MAX_FEATURES`.
2. Each candidate becomes a phrase, a direction word and the feature's name in words (split at
   ``_ - .`` and camelCase, lower case). A count-like feature (a ``n``/``num``/``count`` first
   part, a ``count``/``cnt`` last part, or a ``distinct`` part) loses those markers and reads
   "many"/"few" ("n_distinct_authors" → "many authors"); any other reads "high"/"low". The
   direction is the sentence's word for the feature (its median against the overall median) when
   that is high or low, else the SHAP direction (larger values push into the target → high).
3. A name is the first phrase, with the second when both together stay within :data:`MAX_WORDS`
   words.
4. Unique within a run (segments and clusters together): targets that share a name each take their
   next candidate, again until nothing changes; those that still share one get " (2)", " (3)", …
   in (kind, target) order. Names given in ``explain.names`` are kept as given and taken first.
5. A target without a candidate is "typical <noun>"; the density noise is :data:`NOISE_NAME`.
"""

from __future__ import annotations

import re

import pandas as pd

from seglake.core.config import ExplainConfig
from seglake.core.errors import SeglakeError

NOISE_NAME = "unclustered"
MAX_WORDS = 4
MAX_FEATURES = 3
KINDS = {"segment": "segments", "cluster": "clusters"}  # kind → its key under explain.names
SUBCLUSTER = "subcluster"  # a child of a kept density split (seglake.segmentation.explain_levels)
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+|[0-9]+")


def strong(mean_abs_shap: pd.Series) -> pd.Series:
    """Features that move the model: at least a tenth of the best feature's mean |SHAP|.

    Examples
    --------
    >>> strong(pd.Series([2.0, 0.5, 0.1, 0.0])).tolist()
    [True, True, False, False]
    """
    return mean_abs_shap >= max(0.1 * mean_abs_shap.max(), 1e-12)


def phrase(feature: str, high: bool) -> str:
    """A feature and its direction in words.

    Examples
    --------
    >>> phrase("n_distinct_authors", False), phrase("videos_count", True), phrase("finishRate", True)
    ('few authors', 'many videos', 'high finish rate')
    >>> phrase("awg_engagement_rate", False), phrase("count", True), phrase("f0", True)
    ('low awg engagement rate', 'high count', 'high f0')
    """
    parts = [p.lower() for p in _PARTS.findall(feature)] or [feature]
    words = [p for p in parts if p != "distinct"]
    if words and words[0] in ("n", "num", "count"):
        words = words[1:]
    if words and words[-1] in ("count", "cnt"):
        words = words[:-1]
    counted = bool(words) and words != parts
    if not counted:
        words = parts
    direction = ("many" if high else "few") if counted else ("high" if high else "low")
    return " ".join([direction, *words])


def candidates(ranked: pd.DataFrame) -> dict[tuple[str, int], list[str]]:
    """(kind, target) → the phrases of its strong features in rank order, at most :data:`MAX_FEATURES`.

    ``ranked`` holds ``kind, target, feature, mean_abs_shap, direction, rank`` and optionally
    ``word`` (the sentence's word for the feature: "very high", "low", "typical", …).

    Examples
    --------
    >>> ranked = pd.DataFrame({"kind": "cluster", "target": 1, "feature": ["f0", "n_posts", "f2"],
    ...     "mean_abs_shap": [1.0, 0.5, 0.01], "direction": ["higher", "higher", "lower"],
    ...     "rank": [1, 2, 3], "word": ["very high", "low", "low"]})
    >>> candidates(ranked)  # the sentence says low posts: its word wins over the SHAP direction
    {('cluster', 1): ['high f0', 'few posts']}
    """
    found = {}
    for (kind, target), rows in ranked.groupby(["kind", "target"], sort=True):
        rows = rows[strong(rows["mean_abs_shap"])].sort_values("rank").head(MAX_FEATURES)
        words = rows["word"] if "word" in rows else pd.Series("typical", index=rows.index)
        found[(kind, int(target))] = [
            phrase(f, w.endswith("high") if w.endswith(("high", "low")) else d == "higher")
            for f, d, w in zip(rows["feature"], rows["direction"], words)]
    return found


def _joined(phrases: list[str], used: int) -> str:
    return ", ".join(phrases[:used])


def unique_names(found: dict[tuple[str, int], list[str]], noun: str,
                 fixed: dict[tuple[str, int], str] | None = None) -> dict[tuple[str, int], str]:
    """One name per target of ``found``, unique among them and the ``fixed`` ones (steps 3–5).

    Examples
    --------
    >>> found = {("cluster", 0): ["high f0", "low f1"], ("cluster", 1): ["high f0", "high f2"],
    ...          ("segment", 0): ["high f0", "low f1"], ("segment", 1): []}
    >>> unique_names(found, "accounts")  # doctest: +NORMALIZE_WHITESPACE
    {('cluster', 0): 'high f0, low f1', ('cluster', 1): 'high f0, high f2',
     ('segment', 0): 'high f0, low f1 (2)', ('segment', 1): 'typical accounts'}
    >>> unique_names({("cluster", 2): ["high f0"]}, "accounts", {("segment", 0): "high f0"})
    {('cluster', 2): 'high f0 (2)'}
    """
    fixed = fixed or {}
    used = {}
    for key, phrases in found.items():
        fits = len(phrases) > 1 and len(_joined(phrases, 2).split()) <= MAX_WORDS
        used[key] = 2 if fits else min(len(phrases), 1)
    names = {key: _joined(found[key], n) or f"typical {noun}" for key, n in used.items()}
    changed = True
    while changed:  # each pass lengthens every name that is still shared, up to MAX_FEATURES
        changed = False
        taken = list(names.values()) + list(fixed.values())
        for key in sorted(names):
            if taken.count(names[key]) > 1 and used[key] < min(len(found[key]), MAX_FEATURES):
                used[key] += 1
                names[key] = _joined(found[key], used[key])
                changed = True
    seen = set(fixed.values())
    for key in sorted(names):
        name, n = names[key], 1
        while name in seen:
            n += 1
            name = f"{names[key]} ({n})"
        names[key] = name
        seen.add(name)
    return names


def title(kind: str, target: int, path: str | None = None) -> str:
    """How a target is called in sentences and headings: a child by its path, ``Cluster 3.1``.

    Examples
    --------
    >>> title("subcluster", 4, "3.1"), title("segment", 0)
    ('Cluster 3.1', 'Segment 0')
    """
    return f"Cluster {path}" if kind == SUBCLUSTER else f"{kind.capitalize()} {target}"


def heading(kind: str, target: int, name: str | None, path: str | None = None) -> str:
    """How a named target is shown in the printed summary and the report (a run explained before
    names existed has none: its id alone).

    Examples
    --------
    >>> heading("cluster", 3, "high f0, low f1"), heading("segment", 0, None)
    ('Cluster 3 "high f0, low f1"', 'Segment 0')
    >>> heading("subcluster", 1, "few posts", "3.2")
    'Cluster 3.2 "few posts"'
    """
    called = title(kind, target, path)
    return called if name is None or pd.isna(name) else f'{called} "{name}"'


def overrides(settings: ExplainConfig, targets: list[tuple[str, int]],
              run_id: str) -> dict[tuple[str, int], str]:
    """The ``explain.names`` of the config as (kind, target) → name, each checked against ``targets``.

    Raises
    ------
    SeglakeError
        An override names a segment or cluster that the run does not explain.

    Examples
    --------
    >>> settings = ExplainConfig(names={"clusters": {3: "night owls"}})
    >>> overrides(settings, [("cluster", 3), ("segment", 0)], "r1")
    {('cluster', 3): 'night owls'}
    >>> overrides(settings, [("cluster", 0)], "r1")
    Traceback (most recent call last):
    ...
    seglake.core.errors.SeglakeError: explain.names.clusters.3: run r1 explains no cluster 3 (its clusters: 0)
    """
    given = {}
    for kind, key in KINDS.items():
        for target, name in getattr(settings.names, key).items():
            if (kind, target) not in targets:
                ids = ", ".join(str(t) for k, t in sorted(targets) if k == kind) or "none"
                raise SeglakeError(f"explain.names.{key}.{target}: run {run_id} explains no "
                                   f"{kind} {target} (its {key}: {ids})")
            given[(kind, target)] = name
    return given


def name_targets(ranked: pd.DataFrame, settings: ExplainConfig, run_id: str) -> pd.DataFrame:
    """``kind, target, name`` for every target of ``ranked``: the overrides, else the rule.

    Examples
    --------
    >>> ranked = pd.DataFrame({"kind": ["cluster", "cluster", "segment"], "target": [0, 1, 0],
    ...     "feature": "likes", "mean_abs_shap": 1.0, "direction": ["higher", "lower", "higher"],
    ...     "rank": 1})
    >>> name_targets(ranked, ExplainConfig(names={"segments": {0: "fans"}}), "r1")
          kind  target        name
    0  cluster       0  high likes
    1  cluster       1   low likes
    2  segment       0        fans
    """
    found = candidates(ranked)
    fixed = overrides(settings, list(found), run_id)
    names = {**unique_names({k: v for k, v in found.items() if k not in fixed}, settings.noun, fixed),
             **fixed}
    rows = [{"kind": kind, "target": target, "name": names[(kind, target)]} for kind, target in sorted(names)]
    return pd.DataFrame(rows, columns=["kind", "target", "name"])
