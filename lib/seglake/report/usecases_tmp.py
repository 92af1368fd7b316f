"""Report sections of the MovieLens (``ratings``) and text-cluster (``texts``) use cases.

Called by :func:`seglake.report.build_report`, with its helpers, from the gold tables those stages
write. MovieLens: ALS held-out error beside the mean-rating baseline, the seed's top-10 titles per
rating 5..1 for every segment, who is in each segment, which genres it prefers, and how well the
assigner puts held-out users back in their segment. Texts: per group the silhouette sweep, a 2-D map
of at most :data:`TEXT_MAP_POINTS` texts, cluster sizes and keywords.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from seglake.core.errors import SeglakeError
from seglake.usecases.movielens.ratings import bronze_path
from seglake.report import PALETTE, _figure_html, _missing, _run_rows, _section, _small, _table_html
from seglake.core.tables import Tables, delta_exists
from seglake.usecases.movielens.tastes import AGE_BANDS, ALL_USERS, OLDEST_BAND

RATINGS = [5, 4, 3, 2, 1]
ATTRIBUTES = [("gender", "gender"), ("age_band", "age band"), ("occupation", "occupation")]
TEXT_MAP_POINTS = 5_000  # per group: every cluster stays visible, the page stays light
TEXT_GROUPS_SHOWN = 8    # the largest groups get a map each; every group is in the overview table


def _colour(index: int) -> str:
    return PALETTE[int(index) % len(PALETTE)]


# ---------------------------------------------------------------- MovieLens


def movielens_sections(spark: SparkSession, tables: Tables, run_id: str) -> tuple[list[str], int]:
    """Sections from ``gold/{als_metrics,top_titles,segment_demographics,genre_preference,
    assigner_metrics,assignments}`` and the ratings bronze tables.

    Returns
    -------
    (list of str, int)
        HTML sections and the number of charts in them.
    """
    read = {name: _small(_run_rows(spark, tables.gold(name), run_id))
            for name in ("als_metrics", "top_titles", "segment_demographics", "genre_preference",
                         "assigner_metrics")}
    sections, charts = [], 0
    als = read["als_metrics"]
    if als is not None:
        sections.append(_section("ALS taste embeddings: held-out error", als_html(als.iloc[0])))
        charts += 1
    else:
        sections.append(_section("ALS taste embeddings", _missing("the ratings stage")))
    sections.append(_section("Ratings ingest", _ratings_ingest_html(spark, tables)))

    titles, people, genres = read["top_titles"], read["segment_demographics"], read["genre_preference"]
    if titles is None or people is None or genres is None:
        sections.append(_section("Tastes", _missing("the tastes stage")))
    else:
        sizes = (people[people["attribute"] == "gender"].groupby("segment")["users"].sum()
                 .astype(int).to_dict())
        sizes[ALL_USERS] = sum(sizes.values())
        sections.append(_section("Top-10 titles per rating, per segment", titles_html(titles, sizes)))
        sections.append(_section("Who is in each segment", _figure_html(demographics_figure(people))))
        sections.append(_section("Genre preference", _figure_html(genre_figure(genres))))
        charts += 2

    metrics = read["assigner_metrics"]
    if metrics is not None:
        confusion = (spark.read.format("delta").load(tables.gold("assignments"))
                     .where((F.col("run_id") == run_id) & F.col("holdout"))
                     .groupBy("segment", "assigned_segment").count().toPandas())  # k x k cells
        sections.append(_section("Assigning new users (XGBoost on ratings + demographics)",
                                 assigner_html(metrics.iloc[0], confusion)))
        charts += 2
    else:
        sections.append(_section("Assigning new users", _missing("the assign stage")))
    return sections, charts


def als_html(als: pd.Series) -> str:
    """The ALS metrics row as a sentence, a chart beside the mean-rating baseline, and the caveat."""
    fig = go.Figure([
        go.Bar(name="ALS", x=["MAE", "RMSE"], y=[als["mae"], als["rmse"]], marker_color=PALETTE[0],
               text=[f"{als['mae']:.3f}", f"{als['rmse']:.3f}"], textposition="outside"),
        go.Bar(name="predict the training mean", x=["MAE"], y=[als["baseline_mae"]],
               marker_color="#c7c7c7", text=[f"{als['baseline_mae']:.3f}"], textposition="outside"),
    ])
    fig.update_layout(title="Held-out error on 1-5 star ratings (lower is better)", barmode="group",
                      height=360, yaxis_title="stars")
    text = (f"<p>ALS (rank {int(als['rank'])}, reg {als['reg_param']:g}, {int(als['max_iter'])} "
            f"iterations) fitted on {int(als['train_ratings']):,} ratings predicts the "
            f"{int(als['scored_ratings']):,} held-out ratings it can score with MAE "
            f"<b class='als-mae'>{als['mae']:.3f}</b> and RMSE {als['rmse']:.3f} stars; predicting the "
            f"training mean for every rating gives MAE {als['baseline_mae']:.3f}.</p>"
            f"<p class='note'>The seed's autoencoder reported a validation MAE of "
            f"{als['seed_autoencoder_mae']:g}, but that is a reconstruction error of the whole user x film "
            f"matrix with unrated films filled with 0 (about 94% of the cells), not an error on ratings: "
            f"it cannot be compared with the figures above.</p>")
    return text + _figure_html(fig)


def _ratings_ingest_html(spark: SparkSession, tables: Tables) -> str:
    quarantine = bronze_path(tables, "quarantine")
    if not delta_exists(spark, quarantine):
        return _missing("the ratings stage")
    # bronze/{ratings,users,items} are whole-table overwrites: the state of the latest ratings run.
    kept = {name: spark.read.format("delta").load(bronze_path(tables, name)).count()
            for name in ("ratings", "users", "items")}
    rejected = (spark.read.format("delta").load(quarantine).groupBy("table", "reason").count()
                .orderBy("table", F.desc("count")).toPandas())  # a handful of reasons
    rows = [{"table": name, "bronze rows": kept[name],
             "quarantined rows": int(rejected.loc[rejected["table"] == name, "count"].sum()),
             "reasons": ", ".join(f"{reason} {int(n)}" for reason, n in
                                  rejected.loc[rejected["table"] == name, ["reason", "count"]].to_numpy())}
            for name in kept]
    return ("<p>Every line of the three files is either in bronze or quarantined with its reason (the "
            "ratings stage checks the counts); bronze holds the latest ratings run.</p>"
            + _table_html(pd.DataFrame(rows)))


def titles_html(titles: pd.DataFrame, sizes: dict[int, int]) -> str:
    """One compact table per segment (everyone first): rank, then title and count per rating 5..1."""
    blocks = []
    for segment in sorted(titles["segment"].unique()):
        part = titles[titles["segment"] == segment]
        cells = {(int(rating), int(rank)): (title, int(n))
                 for rating, rank, title, n in zip(part["rating"], part["rank"], part["title"], part["count"])}
        ranks = range(1, int(part["rank"].max()) + 1)
        table = pd.DataFrame([[rank] + [v for rating in RATINGS for v in cells.get((rating, rank), ("", ""))]
                              for rank in ranks],
                             columns=["rank"] + [c for r in RATINGS for c in (f"{r}★ title", f"{r}★ n")])
        who = "Everyone" if segment == ALL_USERS else f"Segment {int(segment)}"
        users = sizes.get(int(segment))
        heading = f"{who} ({users:,} users)" if users is not None else who
        blocks.append(f"<div class='titles' data-segment='{int(segment)}'><h3>{html.escape(heading)}</h3>"
                      f"{_table_html(table)}</div>")
    return ("<p>The most frequent films at each rating, with how many users of the segment gave it "
            "that rating (ties to the smaller film id).</p>" + "".join(blocks))


def demographics_figure(people: pd.DataFrame) -> go.Figure:
    """Share of each gender, age band and occupation per segment, with every user's share."""
    orders = {"age_band": [label for _, label in AGE_BANDS] + [OLDEST_BAND]}
    fig = make_subplots(rows=3, cols=1, subplot_titles=[t for _, t in ATTRIBUTES], vertical_spacing=0.08,
                        row_heights=[0.2, 0.3, 0.5])
    for row, (attribute, _) in enumerate(ATTRIBUTES, start=1):
        part = people[people["attribute"] == attribute]
        values = orders.get(attribute, sorted(part["value"].unique()))
        for segment, mine in part.groupby("segment"):
            mine = mine.set_index("value").reindex(values)
            fig.add_trace(go.Bar(x=values, y=mine["share"], name=f"segment {segment}", legendgroup=str(segment),
                                 showlegend=row == 1, marker_color=_colour(segment),
                                 customdata=mine[["users", "index"]].to_numpy(),
                                 hovertemplate="%{x}: %{y:.1%} (%{customdata[0]} users, index "
                                               "%{customdata[1]:.2f})"), row=row, col=1)
        overall = part.drop_duplicates("value").set_index("value").reindex(values)
        fig.add_trace(go.Scatter(x=values, y=overall["overall_share"], mode="markers", name="every user",
                                 legendgroup="all", showlegend=row == 1,
                                 marker={"symbol": "line-ew-open", "size": 18, "color": "black"}),
                      row=row, col=1)
        fig.update_yaxes(tickformat=".0%", row=row, col=1)
    fig.update_layout(title="Share of each segment by gender, age band and occupation (black: every user)",
                      barmode="group", height=1000, legend={"orientation": "h"})
    return fig


def genre_figure(genres: pd.DataFrame) -> go.Figure:
    """Heatmap of genre lift (share of the segment's ratings / share of everyone's) per segment."""
    lift = genres.pivot(index="segment", columns="genre", values="lift").sort_index()
    share = genres.pivot(index="segment", columns="genre", values="share").reindex_like(lift)
    mean = genres.pivot(index="segment", columns="genre", values="mean_rating").reindex_like(lift)
    fig = go.Figure(go.Heatmap(
        z=lift.to_numpy(), x=list(lift.columns), y=[f"segment {s}" for s in lift.index], zmid=1.0,
        colorscale="RdBu_r", colorbar={"title": "lift"}, text=lift.round(2).to_numpy(),
        texttemplate="%{text}", customdata=pd.concat([share, mean], axis=1).to_numpy().reshape(
            len(lift), 2, -1).transpose(0, 2, 1),
        hovertemplate="%{y}, %{x}: lift %{z:.2f}<br>share of ratings %{customdata[0]:.1%}, mean rating "
                      "%{customdata[1]:.2f}<extra></extra>"))
    fig.update_layout(title="Genre lift per segment (above 1: rated more often than by everyone)",
                      height=180 + 40 * len(lift))
    return fig


def assigner_html(metrics: pd.Series, confusion: pd.DataFrame) -> str:
    """Holdout accuracy beside the majority-class rate, and the holdout confusion matrix."""
    fig = go.Figure(go.Bar(x=["assigner accuracy", "always the largest segment", "macro F1"],
                           y=[metrics["accuracy"], metrics["majority_rate"], metrics["macro_f1"]],
                           marker_color=[PALETTE[0], "#c7c7c7", PALETTE[1]],
                           text=[f"{v:.3f}" for v in (metrics["accuracy"], metrics["majority_rate"],
                                                      metrics["macro_f1"])], textposition="outside"))
    fig.update_layout(title=f"Holdout of {int(metrics['holdout_users'])} users", height=340,
                      yaxis={"range": [0, 1.1]})
    classes = sorted(set(confusion["segment"]) | set(confusion["assigned_segment"]))
    matrix = (confusion.pivot(index="segment", columns="assigned_segment", values="count")
              .reindex(index=classes, columns=classes).fillna(0).astype(int))
    heat = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=[f"assigned {c}" for c in classes],
                                y=[f"segment {c}" for c in classes], colorscale="Blues",
                                text=matrix.to_numpy(), texttemplate="%{text}",
                                hovertemplate="%{y}, %{x}: %{z} users<extra></extra>"))
    heat.update_layout(title="Holdout confusion matrix (rows: segment from KMeans)",
                       height=160 + 50 * len(classes),
                       yaxis={"autorange": "reversed"})
    text = (f"<p>Fitted on {int(metrics['train_users']):,} users with {int(metrics['features']):,} features "
            f"({int(metrics['trees'])} trees, depth {int(metrics['max_depth'])}); on the "
            f"{int(metrics['holdout_users']):,} held-out users it is right <b>{metrics['accuracy']:.1%}</b> of "
            f"the time, against {metrics['majority_rate']:.1%} for always answering the largest segment.</p>")
    return text + _figure_html(fig) + _figure_html(heat)


# ---------------------------------------------------------------- texts


def text_sections(spark: SparkSession, tables: Tables, run_id: str) -> tuple[list[str], int]:
    """Sections from ``gold/{text_sweep,text_clusters,text_keywords}``: an overview, then per group
    (the :data:`TEXT_GROUPS_SHOWN` largest) the sweep, the map, sizes and keywords.

    Raises
    ------
    SeglakeError
        The run has no ``gold/text_sweep`` rows (the text stage has not run).
    """
    sweep = _small(_run_rows(spark, tables.gold("text_sweep"), run_id))
    if sweep is None:
        raise SeglakeError(f"no gold/text_sweep rows for run '{run_id}' under {tables.root}/gold: "
                           "run the text stage first")
    texts = spark.read.format("delta").load(tables.gold("text_clusters")).where(F.col("run_id") == run_id)
    sizes = _small(texts.groupBy("group", "cluster").count())  # groups x clusters rows
    totals = sizes.groupby("group")["count"].sum().sort_values(ascending=False)
    shown = list(totals.index[:TEXT_GROUPS_SHOWN])
    chosen = sweep[sweep["chosen"]].set_index("group")
    overview = pd.DataFrame({"group": totals.index, "texts": totals.astype(int).to_list(),
                             "chosen k": [int(chosen.loc[g, "k"]) for g in totals.index],
                             "silhouette": [float(chosen.loc[g, "silhouette"]) for g in totals.index]})
    note = (f"<p>The {TEXT_GROUPS_SHOWN} largest of {len(totals)} groups are shown below.</p>"
            if len(totals) > TEXT_GROUPS_SHOWN else "")
    sections = [_section("Text clusters per group", note + _table_html(overview))]
    keywords = _small(spark.read.format("delta").load(tables.gold("text_keywords"))
                      .where((F.col("run_id") == run_id) & F.col("group").isin(shown)), 100_000)
    # A seeded hash order keeps the same points on every rebuild of the report.
    order = Window.partitionBy("group").orderBy(F.xxhash64("id", "item"))
    points = (texts.where(F.col("x").isNotNull() & F.col("group").isin(shown))
              .withColumn("position", F.row_number().over(order))
              .where(F.col("position") <= TEXT_MAP_POINTS)
              .select("group", "cluster", "x", "y", F.substring("text", 1, 100).alias("text"))
              .toPandas())  # at most TEXT_GROUPS_SHOWN x TEXT_MAP_POINTS rows
    charts = 0
    for group in shown:
        body, n = _group_html(group, sweep[sweep["group"] == group], sizes[sizes["group"] == group],
                              keywords[keywords["group"] == group] if keywords is not None else None,
                              points[points["group"] == group])
        sections.append(f"<section class='text-group' data-group='{html.escape(str(group))}'>"
                        f"<h2>Group {html.escape(str(group))}</h2>{body}</section>")
        charts += n
    return sections, charts


def _group_html(group: str, sweep: pd.DataFrame, sizes: pd.DataFrame, keywords: pd.DataFrame | None,
                points: pd.DataFrame) -> tuple[str, int]:
    sweep = sweep.sort_values("k")
    reason = sweep.loc[sweep["chosen"], "reason"]
    body = f"<p class='reason'>{html.escape(str(reason.iloc[0]))}</p>" if len(reason) else ""
    charts = 0
    if len(sweep) > 1:
        body += _figure_html(text_sweep_figure(sweep, group))
        charts += 1
    body += _table_html(sweep[["k", "silhouette", "inertia", "chosen"]])
    if len(points):
        body += _figure_html(text_map_figure(points, group))
        charts += 1
    else:
        body += _missing("a 2-D map (the group is smaller than text_clusters.min_group_size)")
    terms = ({c: ", ".join(part.sort_values("rank")["term"]) for c, part in keywords.groupby("cluster")}
             if keywords is not None else {})
    sizes = sizes.sort_values("cluster")
    table = pd.DataFrame({"cluster": sizes["cluster"].astype(int).to_list(),
                          "texts": sizes["count"].astype(int).to_list(),
                          "share": (sizes["count"] / sizes["count"].sum()).to_list(),
                          "keywords": [terms.get(c, "") for c in sizes["cluster"]]})
    return body + f"<div class='keywords'>{_table_html(table)}</div>", charts


def text_sweep_figure(sweep: pd.DataFrame, group: str) -> go.Figure:
    """Silhouette (and KMeans inertia) over k for one group, the chosen k marked."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=sweep["k"], y=sweep["silhouette"], name="silhouette", mode="lines+markers"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=sweep["k"], y=sweep["inertia"], name="inertia", mode="lines+markers",
                             line={"dash": "dot"}), secondary_y=True)
    chosen = sweep.loc[sweep["chosen"], "k"]
    if len(chosen):
        fig.add_vline(x=int(chosen.iloc[0]), line_dash="dash", line_color="black",
                      annotation_text=f"chosen k={int(chosen.iloc[0])}")
    fig.update_layout(title=f"{group}: silhouette per k", xaxis_title="k", height=360,
                      legend={"orientation": "h"})
    fig.update_yaxes(title_text="silhouette", secondary_y=False)
    fig.update_yaxes(title_text="inertia", secondary_y=True)
    return fig


def text_map_figure(points: pd.DataFrame, group: str) -> go.Figure:
    """The group's 2-D UMAP map, one trace per cluster, the text on hover."""
    fig = go.Figure()
    for cluster, part in points.groupby("cluster"):
        fig.add_trace(go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=f"cluster {cluster}",
                                   marker={"size": 4, "color": _colour(cluster), "opacity": 0.7},
                                   text=part["text"], hovertemplate="%{text}<extra>cluster " + str(cluster)
                                   + "</extra>"))
    fig.update_layout(title=f"{group}: {len(points):,} texts on the 2-D map, coloured by cluster", height=520)
    return fig
