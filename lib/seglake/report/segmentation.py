"""The segmentation sections of a run report: choice of k, segments, density map, SHAP, ingest.

Each ``*_section`` is a :data:`~seglake.report.sections.Section`; :data:`SEGMENTATION_SECTIONS` is
their page order for an events or entities config. The ``*_figure`` functions are pure (pandas in,
a plotly figure out).
"""

from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import functions as F

from seglake.core.errors import SeglakeError
from seglake.report.html import (
    NOISE_COLOUR,
    colour,
    figure_html,
    k_curves,
    missing,
    reason_html,
    section,
    table_html,
)
from seglake.report.sections import Rendered, ReportRun, Section
from seglake.segmentation.names import SUBCLUSTER, heading

MAP_POINTS = 20_000  # plotted sample points: enough to see every cluster, light enough for a browser
GOLD_TABLES = ("sweep", "runs", "profiles", "cluster_quality", "explanations", "descriptions")
STABILITY_COLUMNS = ("group", "hdbscan_cluster", "size", "jaccard", "stable", "merged_into")
DENSITY_SWEEP_COLUMNS = ("group", "n_neighbors", "min_cluster_size", "clusters", "stable_clusters",
                         "noise_share", "coverage", "mean_jaccard", "min_jaccard", "stability_ari", "chosen")
SWEEP_COLUMNS = ("k", "wssse", "sse", "silhouette", "silhouette_exact", "min_cluster_share", "chosen")


# ---------------------------------------------------------------- figures


def sweep_figure(sweep: pd.DataFrame) -> go.Figure:
    """SSE and silhouette over k on two axes, the chosen k marked (the seed's 'Clustering effect').

    Parameters
    ----------
    sweep : pandas.DataFrame
        ``gold/sweep`` rows: ``k``, ``sse``, ``silhouette``, ``chosen`` and optionally
        ``silhouette_exact``.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> sweep = pd.DataFrame({"k": [3, 2], "sse": [1.0, 2.0], "silhouette": [0.6, 0.4],
    ...                       "chosen": [True, False]})
    >>> fig = sweep_figure(sweep)
    >>> [t.name for t in fig.data], fig.data[0].x.tolist(), fig.layout.annotations[0].text
    (['SSE (mean distance to center)', 'silhouette (MLlib)'], [2, 3], 'chosen k=3')
    """
    return k_curves(sweep.sort_values("k"), [("sse", "SSE (mean distance to center)", False)],
                    [("silhouette", "silhouette (MLlib)", False),
                     ("silhouette_exact", "silhouette (exact, sample)", True)],
                    ("Clustering effect", "SSE", "silhouette"), 420)


def size_figure(sizes: pd.DataFrame, label: str) -> go.Figure:
    """Bars of segment sizes with their shares.

    Parameters
    ----------
    sizes : pandas.DataFrame
        One row per segment: ``label``, ``size`` and ``share`` (0-1).
    label : str
        The segment column, also the x axis title (``"segment"``).

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> sizes = pd.DataFrame({"segment": [0, 1], "size": [30, 10], "share": [0.75, 0.25]})
    >>> fig = size_figure(sizes, "segment")
    >>> fig.layout.title.text, list(fig.data[0].text)
    ('Segment sizes', ['75.0%', '25.0%'])
    """
    fig = go.Figure(go.Bar(x=sizes[label].astype(str), y=sizes["size"],
                           text=[f"{s:.1%}" for s in sizes["share"]], textposition="outside"))
    fig.update_layout(title=f"{label.capitalize()} sizes", xaxis_title=label, yaxis_title="entities", height=380)
    return fig


def distribution_figure(profiles: pd.DataFrame) -> go.Figure:
    """Per-segment p10–median–p90 of every raw feature, on log axes (features are heavy-tailed).

    Parameters
    ----------
    profiles : pandas.DataFrame
        ``gold/profiles`` rows: ``segment``, ``feature``, ``p10``, ``median``, ``p90``.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per feature, three panels a row.

    Examples
    --------
    >>> profiles = pd.DataFrame({"segment": [0, 1, 0, 1], "feature": ["a", "a", "b", "b"],
    ...                          "p10": [0.0, 1.0, 2.0, 3.0], "median": [0.0, 2.0, 4.0, 6.0],
    ...                          "p90": [1.0, 3.0, 8.0, 9.0]})
    >>> fig = distribution_figure(profiles)
    >>> len(fig.data), float(fig.data[0].y[0])  # a zero median sits at the log floor
    (2, 0.001)
    """
    features = list(dict.fromkeys(profiles["feature"]))
    cols = 3
    rows = math.ceil(len(features) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=features)
    for i, feature in enumerate(features):
        part = profiles[profiles["feature"] == feature].sort_values("segment")
        floor = 1e-3  # log axes cannot show zero: a zero median is drawn at the floor
        median = part["median"].clip(lower=floor)
        fig.add_trace(go.Scatter(
            x=part["segment"].astype(str), y=median, mode="markers", showlegend=False,
            marker={"color": [colour(s) for s in part["segment"]], "size": 9},
            error_y={"type": "data", "symmetric": False,
                     "array": (part["p90"].clip(lower=floor) - median).clip(lower=0),
                     "arrayminus": (median - part["p10"].clip(lower=floor)).clip(lower=0)},
            hovertemplate="segment %{x}<br>median %{y:,.3g}<extra>" + html.escape(feature) + "</extra>",
        ), row=i // cols + 1, col=i % cols + 1)
        fig.update_yaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title="Feature distributions per segment (p10 – median – p90, log scale)",
                      height=300 * rows)
    return fig


def map_figure(points: pd.DataFrame) -> go.Figure:
    """The 2-D UMAP map of the sample, coloured by density cluster (noise in grey).

    Parameters
    ----------
    points : pandas.DataFrame
        ``gold/clusters`` sample rows: ``x``, ``y``, ``cluster`` (-1: noise), ``entity_id``,
        ``group``, ``cluster_probability``.

    Returns
    -------
    plotly.graph_objects.Figure
        One trace per cluster.

    Examples
    --------
    >>> points = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "cluster": [-1, 0],
    ...                        "entity_id": ["a", "b"], "group": [1, 1], "cluster_probability": [0.0, 0.9]})
    >>> [t.name for t in map_figure(points).data]
    ['noise', 'cluster 0']
    """
    fig = go.Figure()
    for cluster, part in points.groupby("cluster"):
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name="noise" if cluster == -1 else f"cluster {cluster}",
            marker={"size": 4, "color": NOISE_COLOUR if cluster == -1 else colour(cluster), "opacity": 0.7},
            customdata=part[["entity_id", "group", "cluster_probability"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>group %{customdata[1]}<br>probability %{customdata[2]:.2f}",
        ))
    fig.update_layout(title="2-D map of the sample (UMAP), coloured by cluster", height=560)
    return fig


def stability_figure(stability: pd.DataFrame, min_stability: float) -> go.Figure:
    """Each HDBSCAN cluster's mean Jaccard over the refits, the ``min_stability`` line across.

    Parameters
    ----------
    stability : pandas.DataFrame
        ``gold/cluster_stability`` rows: ``hdbscan_cluster``, ``jaccard``, ``stable``, ``merged_into``.
    min_stability : float

    Returns
    -------
    plotly.graph_objects.Figure
        One bar per cluster: coloured by its id when stable, grey with where it went when not.

    Examples
    --------
    >>> rows = pd.DataFrame({"hdbscan_cluster": [0, 1], "jaccard": [0.9, 0.4], "stable": [True, False],
    ...                      "merged_into": [0, 0]})
    >>> fig = stability_figure(rows, 0.6)
    >>> list(fig.data[0].text), fig.layout.shapes[0].y0
    (['0.90', '0.40 → 0'], 0.6)
    """
    rows = stability.sort_values("hdbscan_cluster")
    stable = rows["stable"].fillna(True).astype(bool)
    text = [f"{j:.2f}" if s or m == c else f"{j:.2f} → {'noise' if m == -1 else m}"
            for c, j, s, m in zip(rows["hdbscan_cluster"], rows["jaccard"], stable, rows["merged_into"])]
    fig = go.Figure(go.Bar(x=rows["hdbscan_cluster"].astype(str), y=rows["jaccard"], text=text,
                           textposition="outside",
                           marker_color=[colour(c) if s else NOISE_COLOUR
                                         for c, s in zip(rows["hdbscan_cluster"], stable)]))
    fig.add_hline(y=min_stability, line_dash="dash", annotation_text=f"min_stability {min_stability:g}")
    fig.update_layout(title="Cluster stability (mean Jaccard with its best match over the refits)",
                      xaxis_title="HDBSCAN cluster", yaxis_title="Jaccard", yaxis_range=[0, 1.1], height=380)
    return fig


def density_sweep_figure(sweep: pd.DataFrame) -> go.Figure:
    """Mean cluster stability and coverage over ``min_cluster_size``, one line each per
    ``n_neighbors``, the chosen setting marked (the density settings' 'Clustering effect').

    Parameters
    ----------
    sweep : pandas.DataFrame
        One group's ``gold/density_sweep`` rows.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> sweep = pd.DataFrame({"n_neighbors": [15, 15], "min_cluster_size": [10, 20], "mean_jaccard": [0.5, 0.9],
    ...                       "coverage": [0.8, 0.7], "stable_clusters": [9, 4], "chosen": [False, True]})
    >>> fig = density_sweep_figure(sweep)
    >>> [t.name for t in fig.data], fig.data[2].x.tolist()
    (['mean stability, n_neighbors 15', 'coverage, n_neighbors 15', 'chosen'], [20])
    """
    fig = go.Figure()
    for neighbors, part in sweep.sort_values("min_cluster_size").groupby("n_neighbors"):
        clusters = [f"{c} stable clusters" for c in part["stable_clusters"]]
        fig.add_trace(go.Scatter(x=part["min_cluster_size"], y=part["mean_jaccard"], mode="lines+markers",
                                 name=f"mean stability, n_neighbors {neighbors}", text=clusters))
        fig.add_trace(go.Scatter(x=part["min_cluster_size"], y=part["coverage"], mode="lines+markers",
                                 line_dash="dot", name=f"coverage, n_neighbors {neighbors}", text=clusters))
    chosen = sweep[sweep["chosen"]]
    fig.add_trace(go.Scatter(x=chosen["min_cluster_size"], y=chosen["mean_jaccard"], mode="markers",
                             name="chosen", marker={"size": 16, "symbol": "star", "color": "black"}))
    fig.update_layout(title="Density settings tried", xaxis_title="min_cluster_size", xaxis_type="log",
                      yaxis_title="mean Jaccard / share of the sample in stable clusters",
                      yaxis_range=[0, 1.05], height=420)
    return fig


def shap_figure(part: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of mean |SHAP| for one target's top features, coloured by direction.

    Parameters
    ----------
    part : pandas.DataFrame
        One target's ``gold/explanations`` rows: ``feature``, ``rank``, ``mean_abs_shap`` and
        ``direction`` (``"higher"`` in red, else blue).
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
        The rank-1 feature on top.

    Examples
    --------
    >>> part = pd.DataFrame({"feature": ["likes", "posts"], "rank": [1, 2],
    ...                      "mean_abs_shap": [0.9, 0.2], "direction": ["higher", "lower"]})
    >>> list(shap_figure(part, "segment 0").data[0].y)
    ['posts', 'likes']
    """
    part = part.sort_values("rank", ascending=False)
    colours = ["#d62728" if d == "higher" else "#1f77b4" for d in part["direction"]]
    fig = go.Figure(go.Bar(x=part["mean_abs_shap"], y=part["feature"], orientation="h",
                           marker_color=colours, text=part["direction"], textposition="auto"))
    fig.update_layout(title=title, height=90 + 28 * len(part), margin={"l": 10, "r": 10, "t": 40, "b": 30},
                      xaxis_title="mean |SHAP|")
    return fig


# ---------------------------------------------------------------- sections


def require_gold_rows(run: ReportRun) -> Rendered:
    """Refuse a run without a single row in the segmentation gold tables (no HTML of its own).

    Raises
    ------
    SeglakeError
        None of ``gold/{sweep,runs,profiles,cluster_quality,explanations,descriptions}`` has rows
        for the run: its stages have not run.
    """
    if all(run.gold(name) is None for name in GOLD_TABLES):
        raise SeglakeError(f"no gold rows for run '{run.run_id}' under {run.tables.root}/gold: "
                           "run its stages first")
    return Rendered([], 0)


def choice_of_k_section(run: ReportRun) -> Rendered:
    """'Choice of k': the chosen k's reason, :func:`sweep_figure` and the sweep table."""
    sweep = run.gold("sweep")
    if sweep is None:
        return Rendered([section("Choice of k", missing("the sweep stage"))], 0)
    shown = [c for c in SWEEP_COLUMNS if c in sweep]
    body = reason_html(sweep) + figure_html(sweep_figure(sweep)) + table_html(sweep.sort_values("k")[shown])
    return Rendered([section("Choice of k", body)], 1)


def segments_section(run: ReportRun) -> Rendered:
    """Segment sizes, names and per-feature means in original units, sizes and distributions charted."""
    profiles = run.gold("profiles")
    if profiles is None:
        return Rendered([section("Segments", missing("the segment stage"))], 0)
    sizes = profiles.drop_duplicates("segment")[["segment", "size", "share"]].sort_values("segment")
    wide = profiles.pivot(index="segment", columns="feature", values="mean").reset_index()
    wide = sizes.merge(wide, on="segment")
    descriptions = run.gold("descriptions")
    if descriptions is not None and "name" in descriptions:  # the explain stage's names, beside the ids
        named = descriptions[descriptions["kind"] == "segment"][["target", "name"]]
        wide.insert(1, "name", wide["segment"].map(named.set_index("target")["name"]))
    body = (table_html(wide) + figure_html(size_figure(sizes, "segment"))
            + figure_html(distribution_figure(profiles)))
    return Rendered([section("Segments in original units (mean per feature)", body)], 2)


def segment_stability_section(run: ReportRun) -> Rendered:
    """Each KMeans segment's mean Jaccard over the refits (``gold/segment_stability``) and its table."""
    stability = run.gold("segment_stability")
    if stability is None:
        return Rendered([], 0)
    bars = stability.rename(columns={"segment": "hdbscan_cluster"}).assign(merged_into=stability["segment"])
    figure = stability_figure(bars, run.config.density.min_stability)
    figure.update_layout(title="Segment stability (mean Jaccard with the best match over KMeans refits)",
                         xaxis_title="segment")
    body = figure_html(figure) + table_html(stability.drop(columns="run_id", errors="ignore"))
    return Rendered([section("Segment stability", body)], 1)


def cluster_tree(sizes: pd.DataFrame, quality: pd.DataFrame | None) -> pd.DataFrame:
    """The density levels as an indented tree: one row per node (a first-level cluster or a child a
    kept split made), its entities below it, and the verdict on splitting it.

    Parameters
    ----------
    sizes : pandas.DataFrame
        ``cluster_path`` (the deepest node each entity reached) and ``count``.
    quality : pandas.DataFrame or None
        ``gold/cluster_quality``: the rows with ``level`` above 1 name the parents tried
        (``parent``, ``split_kept``, ``split_reason``).

    Examples
    --------
    >>> sizes = pd.DataFrame({"cluster_path": ["1", "2.1", "2.2", "2", "-1"], "count": [50, 30, 15, 5, 10]})
    >>> quality = pd.DataFrame({"level": [1, 2, 2], "parent": [None, "1", "2"],
    ...                         "split_kept": [None, False, True], "split_reason": [None, "1 stable", "2 stable"]})
    >>> for row in cluster_tree(sizes, quality).itertuples(index=False):
    ...     print(row.node, row.entities, round(row.share, 2), row.split or "-")
    -1 10 0.09 -
    1 50 0.45 1 stable
    2 50 0.45 2 stable
    \u2514 2.1 30 0.27 -
    \u2514 2.2 15 0.14 -
    """
    def node_key(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in path.split("."))

    leaves = dict(zip(sizes["cluster_path"].astype(str), sizes["count"].astype(int)))
    totals: dict[str, int] = {}
    for path, count in leaves.items():  # a node holds its own leaf rows and all its descendants'
        parts = path.split(".")
        for depth in range(1, len(parts) + 1):
            node = ".".join(parts[:depth])
            totals[node] = totals.get(node, 0) + count
    verdicts: dict[str, str] = {}
    if quality is not None and "level" in quality.columns:
        tried = quality[quality["level"].fillna(1).astype(int) > 1]
        verdicts = {str(r.parent): str(r.split_reason) for r in tried.itertuples()}
    everyone = sum(leaves.values())
    rows = [("└ " * (len(node.split(".")) - 1) + node, totals[node], totals[node] / everyone,
             verdicts.get(node, "")) for node in sorted(totals, key=node_key)]
    return pd.DataFrame(rows, columns=["node", "entities", "share", "split"])


def node_names(descriptions: pd.DataFrame | None) -> dict[str, str]:
    """Cluster path → the explain stage's name (first-level clusters by id, children by path).

    Examples
    --------
    >>> rows = pd.DataFrame({"kind": ["cluster", "subcluster", "segment"], "target": [3, 1, 3],
    ...                      "path": ["3", "3.1", None], "name": ["night owls", "early birds", "fans"]})
    >>> node_names(rows)
    {'3': 'night owls', '3.1': 'early birds'}
    """
    if descriptions is None or "name" not in descriptions or "path" not in descriptions:
        return {}
    rows = descriptions[descriptions["kind"].isin(["cluster", SUBCLUSTER]) & descriptions["path"].notna()]
    return dict(zip(rows["path"].astype(str), rows["name"]))


def density_section(run: ReportRun) -> Rendered:
    """The 2-D map of at most :data:`MAP_POINTS` sampled entities, the surrogate's fidelity and, at
    ``density.depth`` above 1, the tree of clusters and children (:func:`cluster_tree`)."""
    clusters = run.rows(run.tables.gold("clusters"))
    points = None
    if clusters is not None:
        sample = clusters.where(F.col("in_sample"))
        points = sample.orderBy(F.rand(0)).limit(MAP_POINTS).toPandas()  # bounded by MAP_POINTS
    if points is None or not len(points):
        return Rendered([section("Density clusters", missing("the density stage"))], 0)
    quality = run.gold("cluster_quality")
    body = figure_html(map_figure(points)) + (table_html(quality) if quality is not None else "")
    if "cluster_2" in clusters.columns:  # one row per node: as many as the levels made, not entities
        sizes = clusters.groupBy("cluster_path").count().toPandas()
        tree = cluster_tree(sizes, quality)
        named = node_names(run.gold("descriptions"))
        if named:  # the explain stage's names beside the nodes
            tree["name"] = [named.get(node.split(" ")[-1], "") for node in tree["node"]]
        body += ("<h3>The cluster tree (density.depth levels; a child is a kept split of its parent)</h3>"
                 + table_html(tree))
    stability_body, charts = stability_html(run)
    return Rendered([section("Density clusters and surrogate fidelity", body + stability_body)], 1 + charts)


def stability_html(run: ReportRun) -> tuple[str, int]:
    """Per group: the density rule's line, :func:`density_sweep_figure` when several settings were
    tried, :func:`stability_figure` and the per-cluster table; with the number of charts."""
    stability, sweep = run.gold("cluster_stability"), run.gold("density_sweep")
    if stability is None or sweep is None:
        return missing("per-cluster stability (gold/cluster_stability; run the density stage again)"), 0
    parts, charts = [], 0
    for group, tried in sweep.groupby("group"):
        clusters = stability[stability["group"] == group]
        parts.append(reason_html(tried))
        if len(tried) > 1:
            parts.append(figure_html(density_sweep_figure(tried)) + table_html(tried[list(DENSITY_SWEEP_COLUMNS)]))
            charts += 1
        if len(clusters) and clusters["jaccard"].notna().any():
            parts.append(figure_html(stability_figure(clusters, run.config.density.min_stability)))
            charts += 1
        parts.append(table_html(clusters[list(STABILITY_COLUMNS)].sort_values("hdbscan_cluster")))
    return "".join(parts), charts


def explain_section(run: ReportRun) -> Rendered:
    """Per segment and cluster: its name and description, the surrogate's F1 and its top SHAP features."""
    explanations, descriptions = run.gold("explanations"), run.gold("descriptions")
    if explanations is None or descriptions is None:
        return Rendered([section("Explanations", missing("the explain stage"))], 0)
    blocks, charts = [], 0
    stability = target_stability(run)
    for row in descriptions.sort_values(["kind", "target"]).itertuples(index=False):
        part = explanations[(explanations["kind"] == row.kind) & (explanations["target"] == row.target)]
        part = part[part["rank"] <= run.config.explain.top_features + 2]
        scores = part.iloc[0] if len(part) else None
        score_text = (f"F1 {scores['f1']:.2f} (precision {scores['precision']:.2f}, recall "
                      f"{scores['recall']:.2f})" if scores is not None else "")
        path = getattr(row, "path", None)
        key = (row.kind, path if row.kind == SUBCLUSTER else int(row.target))
        if key in stability:
            score_text += ("; " if score_text else "") + (
                f"stability {stability[key]:.2f} (mean Jaccard over the refits)")
        title = heading(row.kind, row.target, getattr(row, "name", None), path)
        chart = figure_html(shap_figure(part, title)) if len(part) else ""
        charts += 1 if len(part) else 0
        blocks.append(f"<div class='explain'><div class='text'><h3 class='name'>{html.escape(title)}</h3>"
                      f"<p>{html.escape(row.description)}</p>"
                      f"<p class='score'>{score_text}</p></div><div class='chart'>{chart}</div></div>")
    return Rendered([section("Why each group exists (one-vs-rest XGBoost + SHAP)", "".join(blocks))], charts)


def target_stability(run: ReportRun) -> dict[tuple[str, int | str], float]:
    """(kind, id) → the mean Jaccard over the refits of each segment (``gold/segment_stability``)
    and each stable density cluster (``gold/cluster_stability``: a stable cluster keeps its HDBSCAN
    id, the unstable ones merged into it are not counted); a stable child of a kept split is
    (``subcluster``, its path)."""
    found: dict[tuple[str, int | str], float] = {}
    segments, clusters = run.gold("segment_stability"), run.gold("cluster_stability")
    if segments is not None:
        found.update({("segment", int(s)): float(j) for s, j in zip(segments["segment"], segments["jaccard"])})
    if clusters is not None:
        stable = clusters[clusters["stable"].fillna(False).astype(bool)]
        level = stable["level"].fillna(1).astype(int) if "level" in stable else pd.Series(1, stable.index)
        first, below = stable[level == 1], stable[level > 1]
        found.update({("cluster", int(c)): float(j) for c, j in zip(first["hdbscan_cluster"], first["jaccard"])})
        found.update({(SUBCLUSTER, f"{p}.{int(c)}"): float(j)
                      for p, c, j in zip(below["parent"], below["merged_into"], below["jaccard"])})
    return found


def ingest_section(run: ReportRun) -> Rendered:
    """'Ingest reconciliation': input rows = bronze + quarantine over the logged files, and the
    quarantine reasons (a ready entity table has no ingest: the section says so)."""
    return Rendered([section("Ingest reconciliation", ingest_html(run))], 0)


def ingest_html(run: ReportRun) -> str:
    """The body of :func:`ingest_section`, from ``bronze/ingest_log`` and ``bronze/quarantine``."""
    log = run.table(run.tables.ingest_log, "ingest")
    if log is None:
        return missing("an ingest (the source is a ready entity table)")
    totals = log.agg(F.count("*").alias("files"), F.sum("input_rows").alias("input_rows"),
                     F.sum("bronze_rows").alias("bronze_rows"),
                     F.sum("quarantined_rows").alias("quarantined_rows")).toPandas()
    quarantine = run.table(run.tables.quarantine, "ingest")
    reasons = (quarantine.select(F.split("reason", ";")[0].alias("reason")).groupBy("reason").count()
               .orderBy(F.desc("count")).toPandas()) if quarantine is not None else None
    row = totals.iloc[0]
    balanced = int(row["input_rows"] or 0) == int(row["bronze_rows"] or 0) + int(row["quarantined_rows"] or 0)
    verdict = "reconciled" if balanced else "does NOT reconcile"
    text = (f"<p>input {int(row['input_rows'] or 0):,} rows = bronze {int(row['bronze_rows'] or 0):,} + "
            f"quarantine {int(row['quarantined_rows'] or 0):,} ({verdict}) over {int(row['files'])} files.</p>")
    return text + (table_html(reasons) if reasons is not None and len(reasons) else "<p>No rows quarantined.</p>")


def run_record_section(run: ReportRun) -> Rendered:
    """'Run record': the run's ``gold/runs`` rows (nothing when the run has none)."""
    runs = run.gold("runs")
    return Rendered([section("Run record", table_html(runs))] if runs is not None else [], 0)


SEGMENTATION_SECTIONS: tuple[Section, ...] = (
    require_gold_rows, choice_of_k_section, segments_section, segment_stability_section, density_section,
    explain_section,
    ingest_section, run_record_section,
)
"""The page of an events or entities config, in order (the default of ``build_report``)."""
