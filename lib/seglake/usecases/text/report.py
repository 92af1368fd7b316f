"""The report stage of a text-cluster (``texts``) config: the text sections only.

An overview of every group, then for the :data:`TEXT_GROUPS_SHOWN` largest groups the silhouette
sweep, a 2-D map of at most :data:`TEXT_MAP_POINTS` texts, cluster sizes and keywords, from
``gold/{text_sweep,text_clusters,text_keywords}``.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.report import build_report
from seglake.report.html import (
    colour,
    figure_html,
    k_curves,
    missing,
    reason_html,
    section,
    small,
    table_html,
)
from seglake.report.sections import Rendered, ReportRun, Section

TEXT_MAP_POINTS = 5_000  # per group: every cluster stays visible, the page stays light
TEXT_GROUPS_SHOWN = 8    # the largest groups get a map each; every group is in the overview table


def text_sweep_figure(sweep: pd.DataFrame, group: str) -> go.Figure:
    """Silhouette (and KMeans inertia) over k for one group, the chosen k marked.

    Parameters
    ----------
    sweep : pandas.DataFrame
        The group's ``gold/text_sweep`` rows sorted by ``k``: ``silhouette``, ``inertia``, ``chosen``.
    group : str

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> sweep = pd.DataFrame({"k": [2, 3], "silhouette": [0.2, 0.3], "inertia": [9.0, 7.0],
    ...                       "chosen": [False, True]})
    >>> fig = text_sweep_figure(sweep, "en")
    >>> fig.layout.title.text, fig.layout.annotations[0].text
    ('en: silhouette per k', 'chosen k=3')
    """
    return k_curves(sweep, [("silhouette", "silhouette", False)], [("inertia", "inertia", True)],
                    (f"{group}: silhouette per k", "silhouette", "inertia"), 360)


def text_map_figure(points: pd.DataFrame, group: str) -> go.Figure:
    """The group's 2-D UMAP map, one trace per cluster, the text on hover.

    Parameters
    ----------
    points : pandas.DataFrame
        ``x``, ``y``, ``cluster`` and ``text`` (the first 100 characters) of the plotted texts.
    group : str

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> points = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.5], "cluster": [0, 1, 1],
    ...                        "text": ["a", "b", "c"]})
    >>> fig = text_map_figure(points, "en")
    >>> [t.name for t in fig.data], fig.layout.title.text
    (['cluster 0', 'cluster 1'], 'en: 3 texts on the 2-D map, coloured by cluster')
    """
    fig = go.Figure()
    for cluster, part in points.groupby("cluster"):
        fig.add_trace(go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=f"cluster {cluster}",
                                   marker={"size": 4, "color": colour(cluster), "opacity": 0.7},
                                   text=part["text"], hovertemplate="%{text}<extra>cluster " + str(cluster)
                                   + "</extra>"))
    fig.update_layout(title=f"{group}: {len(points):,} texts on the 2-D map, coloured by cluster", height=520)
    return fig


def group_html(group: str, sweep: pd.DataFrame, sizes: pd.DataFrame, keywords: pd.DataFrame | None,
               points: pd.DataFrame) -> tuple[str, int]:
    """One group's block: the chosen k's reason, sweep chart and table, map, and cluster table.

    Parameters
    ----------
    group : str
    sweep : pandas.DataFrame
        The group's ``gold/text_sweep`` rows.
    sizes : pandas.DataFrame
        Texts per ``cluster`` (column ``count``).
    keywords : pandas.DataFrame or None
        The group's ``gold/text_keywords`` rows (``cluster``, ``rank``, ``term``).
    points : pandas.DataFrame
        The group's mapped texts (see :func:`text_map_figure`); empty when it has no map.

    Returns
    -------
    (str, int)
        The HTML and its number of charts.
    """
    sweep = sweep.sort_values("k")
    body = reason_html(sweep)
    charts = 0
    if len(sweep) > 1:
        body += figure_html(text_sweep_figure(sweep, group))
        charts += 1
    body += table_html(sweep[["k", "silhouette", "inertia", "chosen"]])
    if len(points):
        body += figure_html(text_map_figure(points, group))
        charts += 1
    else:
        body += missing("a 2-D map (the group is smaller than text_clusters.min_group_size)")
    terms = ({c: ", ".join(part.sort_values("rank")["term"]) for c, part in keywords.groupby("cluster")}
             if keywords is not None else {})
    sizes = sizes.sort_values("cluster")
    table = pd.DataFrame({"cluster": sizes["cluster"].astype(int).to_list(),
                          "texts": sizes["count"].astype(int).to_list(),
                          "share": (sizes["count"] / sizes["count"].sum()).to_list(),
                          "keywords": [terms.get(c, "") for c in sizes["cluster"]]})
    return body + f"<div class='keywords'>{table_html(table)}</div>", charts


def text_sections(run: ReportRun) -> Rendered:
    """The overview table, then one section per shown group (:func:`group_html`).

    Raises
    ------
    SeglakeError
        The run has no ``gold/text_sweep`` rows (the text stage has not run).
    """
    tables, run_id = run.tables, run.run_id
    sweep = run.gold("text_sweep")
    if sweep is None:
        raise SeglakeError(f"no gold/text_sweep rows for run '{run_id}' under {tables.root}/gold: "
                           "run the text stage first")
    texts = run.rows(tables.gold("text_clusters"), "text")
    sizes = small(texts.groupBy("group", "cluster").count())  # groups x clusters rows
    totals = sizes.groupby("group")["count"].sum().sort_values(ascending=False)
    shown = list(totals.index[:TEXT_GROUPS_SHOWN])
    chosen = sweep[sweep["chosen"]].set_index("group")
    overview = pd.DataFrame({"group": totals.index, "texts": totals.astype(int).to_list(),
                             "chosen k": [int(chosen.loc[g, "k"]) for g in totals.index],
                             "silhouette": [float(chosen.loc[g, "silhouette"]) for g in totals.index]})
    note = (f"<p>The {TEXT_GROUPS_SHOWN} largest of {len(totals)} groups are shown below.</p>"
            if len(totals) > TEXT_GROUPS_SHOWN else "")
    parts = [section("Text clusters per group", note + table_html(overview))]
    keyword_rows = run.rows(tables.gold("text_keywords"))
    keywords = (small(keyword_rows.where(F.col("group").isin(shown)), 100_000)
                if keyword_rows is not None else None)
    # A seeded hash order keeps the same points on every rebuild of the report.
    order = Window.partitionBy("group").orderBy(F.xxhash64("id", "item"))
    points = (texts.where(F.col("x").isNotNull() & F.col("group").isin(shown))
              .withColumn("position", F.row_number().over(order))
              .where(F.col("position") <= TEXT_MAP_POINTS)
              .select("group", "cluster", "x", "y", F.substring("text", 1, 100).alias("text"))
              .toPandas())  # at most TEXT_GROUPS_SHOWN x TEXT_MAP_POINTS rows
    charts = 0
    for group in shown:
        body, n = group_html(group, sweep[sweep["group"] == group], sizes[sizes["group"] == group],
                             keywords[keywords["group"] == group] if keywords is not None else None,
                             points[points["group"] == group])
        parts.append(f"<section class='text-group' data-group='{html.escape(str(group))}'>"
                     f"<h2>Group {html.escape(str(group))}</h2>{body}</section>")
        charts += n
    return Rendered(parts, charts)


SECTIONS: tuple[Section, ...] = (text_sections,)
"""The page of a texts config."""


def report(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``report`` stage of a texts config: :func:`seglake.report.build_report` with :data:`SECTIONS`.

    Returns the page's :class:`StageResult` as ``build_report`` does; a :class:`SeglakeError`
    when the config has no ``texts`` section, or the run has no ``gold/text_sweep`` rows.
    """
    if config.texts is None:
        raise SeglakeError(f"{config.source_file}: the text-cluster report needs a 'texts' section")
    return build_report(spark, config, run_id, sections=SECTIONS)
