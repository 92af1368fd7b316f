"""The report stage of a MovieLens (``ratings``) config: the segmentation sections and its own.

After the choice of k and the segments: the ALS held-out error beside the mean-rating baseline, the
ratings ingest, which feature blocks (tastes, age, gender, occupation) carry the separation between
segments, the seed's top-10 titles per rating 5..1 for every segment, who is in each segment and
which US state it lives in, which genres it prefers, and how well the assigner puts held-out users
back in their segment; then the run record. A ratings run has no density, explain or events-ingest
stage, so those sections are left out. The sections read ``gold/{als_metrics,block_variance,
top_titles,segment_demographics,genre_preference,assigner_metrics,assignments}`` and
``bronze/{ratings,users,items,quarantine}``.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import read_delta
from seglake.report import build_report
from seglake.report.html import (
    NOISE_COLOUR,
    PALETTE,
    colour,
    figure_html,
    missing,
    section,
    table_html,
)
from seglake.report.sections import Rendered, ReportRun, Section
from seglake.report.segmentation import (
    choice_of_k_section,
    require_gold_rows,
    run_record_section,
    segment_stability_section,
    segments_section,
)
from seglake.usecases.movielens.geography import UNMATCHED
from seglake.usecases.movielens.separation import leading_block
from seglake.usecases.movielens.tastes import AGE_BANDS, ALL_USERS, OLDEST_BAND, unmatched_line

RATINGS = [5, 4, 3, 2, 1]
ONE_GENDER = 0.95  # a segment at least this much one gender is called a gender split
ATTRIBUTES = [("gender", "gender"), ("age_band", "age band"), ("occupation", "occupation")]


# ---------------------------------------------------------------- pure builders


def als_html(als: pd.Series) -> str:
    """The ALS metrics row as a sentence, a chart beside the mean-rating baseline, and the caveat.

    Parameters
    ----------
    als : pandas.Series
        The run's ``gold/als_metrics`` row.

    Returns
    -------
    str
    """
    fig = go.Figure([
        go.Bar(name="ALS", x=["MAE", "RMSE"], y=[als["mae"], als["rmse"]], marker_color=PALETTE[0],
               text=[f"{als['mae']:.3f}", f"{als['rmse']:.3f}"], textposition="outside"),
        go.Bar(name="predict the training mean", x=["MAE"], y=[als["baseline_mae"]],
               marker_color=NOISE_COLOUR, text=[f"{als['baseline_mae']:.3f}"], textposition="outside"),
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
    return text + figure_html(fig)


def titles_html(titles: pd.DataFrame, sizes: dict[int, int]) -> str:
    """One compact table per segment (everyone first): rank, then title and count per rating 5..1.

    Parameters
    ----------
    titles : pandas.DataFrame
        ``gold/top_titles`` rows: ``segment`` (-1: everyone), ``rating``, ``rank``, ``title``,
        ``count``.
    sizes : dict of int to int
        Users per segment, for the headings.

    Returns
    -------
    str

    Examples
    --------
    >>> titles = pd.DataFrame({"segment": [-1, -1], "rating": [5, 1], "rank": [1, 1],
    ...                        "title": ["Star Wars (1977)", "Jaws (1975)"], "count": [325, 4]})
    >>> text = titles_html(titles, {-1: 943})
    >>> "<h3>Everyone (943 users)</h3>" in text, "<td>Star Wars (1977)</td><td>325</td>" in text
    (True, True)
    """
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
                      f"{table_html(table)}</div>")
    return ("<p>The most frequent films at each rating, with how many users of the segment gave it "
            "that rating (ties to the smaller film id).</p>" + "".join(blocks))


def demographics_figure(people: pd.DataFrame) -> go.Figure:
    """Share of each gender, age band and occupation per segment, with every user's share.

    Parameters
    ----------
    people : pandas.DataFrame
        ``gold/segment_demographics`` rows: ``segment``, ``attribute``, ``value``, ``users``,
        ``share``, ``overall_share``, ``index``.

    Returns
    -------
    plotly.graph_objects.Figure
        Three panels (gender, age band, occupation), one bar trace per segment in each.
    """
    orders = {"age_band": [label for _, label in AGE_BANDS] + [OLDEST_BAND]}
    fig = make_subplots(rows=3, cols=1, subplot_titles=[t for _, t in ATTRIBUTES], vertical_spacing=0.08,
                        row_heights=[0.2, 0.3, 0.5])
    for row, (attribute, _) in enumerate(ATTRIBUTES, start=1):
        part = people[people["attribute"] == attribute]
        values = orders.get(attribute, sorted(part["value"].unique()))
        for segment, mine in part.groupby("segment"):
            mine = mine.set_index("value").reindex(values)
            fig.add_trace(go.Bar(x=values, y=mine["share"], name=f"segment {segment}", legendgroup=str(segment),
                                 showlegend=row == 1, marker_color=colour(segment),
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
    """Heatmap of genre lift (share of the segment's ratings / share of everyone's) per segment.

    Parameters
    ----------
    genres : pandas.DataFrame
        ``gold/genre_preference`` rows: ``segment``, ``genre``, ``lift``, ``share``, ``mean_rating``.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> genres = pd.DataFrame({"segment": [0, 0, 1, 1], "genre": ["Drama", "Horror"] * 2,
    ...                        "lift": [1.2, 0.5, 0.8, 1.6], "share": [0.3, 0.1, 0.2, 0.2],
    ...                        "mean_rating": [3.9, 3.1, 3.5, 3.4]})
    >>> heat = genre_figure(genres).data[0]
    >>> list(heat.y), heat.z.tolist()
    (['segment 0', 'segment 1'], [[1.2, 0.5], [0.8, 1.6]])
    """
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


def separation_html(blocks: pd.DataFrame, people: pd.DataFrame) -> str:
    """Share of between-segment variance per feature block, with what it says and any segment
    that is almost all one gender.

    Parameters
    ----------
    blocks : pandas.DataFrame
        ``gold/block_variance`` rows: ``block``, ``columns``, ``clustered``, ``share``, ``explained``.
    people : pandas.DataFrame
        ``gold/segment_demographics`` rows (the gender shares).

    Returns
    -------
    str

    Examples
    --------
    >>> blocks = pd.DataFrame({"block": ["tastes", "gender"], "columns": [20, 2], "clustered": [True, True],
    ...                        "between_ss": [180.0, 720.0],
    ...                        "share": [0.2, 0.8], "explained": [0.05, 0.9]})
    >>> people = pd.DataFrame({"segment": [0, 0, 1], "attribute": "gender", "value": ["F", "M", "M"],
    ...                        "share": [0.02, 0.98, 1.0]})
    >>> text = separation_html(blocks, people)
    >>> "gender carries most of the separation" in text, "Segments 0, 1 are at least 95% one gender" in text
    (True, True)
    """
    order = blocks.sort_values("share", ascending=False)
    fig = go.Figure(go.Bar(
        x=list(order["block"]), y=list(order["share"]),
        marker_color=[PALETTE[0] if c else NOISE_COLOUR for c in order["clustered"]],
        text=[f"{v:.0%}" for v in order["share"]], textposition="outside",
        customdata=order[["columns", "explained"]].to_numpy(),
        hovertemplate="%{x}: %{y:.1%} of the between-segment variance<br>%{customdata[0]} columns, "
                      "%{customdata[1]:.1%} of their variance between segments<extra></extra>"))
    fig.update_layout(title="Share of the between-segment variance by feature block "
                            "(blue: clustered on; grey: profiled only)",
                      height=360, yaxis={"tickformat": ".0%", "range": [0, 1.1]})
    gender = people[(people["attribute"] == "gender") & (people["share"] >= ONE_GENDER)]
    split = sorted(int(s) for s in gender["segment"].unique())
    warning = (f"<p class='warning'>Segments {', '.join(map(str, split))} are at least {ONE_GENDER:.0%} one "
               f"gender.</p>" if split else
               f"<p>No segment is {ONE_GENDER:.0%} or more one gender.</p>")
    return (f"<p class='separation'>{html.escape(leading_block(blocks))} Each column is standardized, so a "
            "block's share counts how much its columns differ between segments, not their scale; a block "
            "in grey was not clustered on and is measured on the users' raw attributes.</p>"
            + warning + figure_html(fig)
            + table_html(order[["block", "clustered", "columns", "share", "explained", "between_ss"]]))


def states_html(people: pd.DataFrame) -> str:
    """Share of each segment's users per US state (heatmap), with the users no state was found for.

    Parameters
    ----------
    people : pandas.DataFrame
        ``gold/segment_demographics`` rows; the ``state`` attribute is used.

    Returns
    -------
    str
        A sentence counting the unmatched zip codes, a table of them per segment and the heatmap.

    Examples
    --------
    >>> people = pd.DataFrame({"segment": [0, 0, 1], "attribute": "state",
    ...                        "value": ["NY", "unknown US zip code", "NY"], "users": [3, 1, 2],
    ...                        "share": [0.75, 0.25, 1.0], "overall_share": [0.833, 0.167, 0.833]})
    >>> text = states_html(people)
    >>> "1 of 6 users have no US state (unknown US zip code 1)" in text
    True
    """
    states = people[people["attribute"] == "state"]
    overall = states.drop_duplicates("value").set_index("value")["overall_share"]
    places = [v for v in overall.sort_values(ascending=False).index if v not in UNMATCHED]
    columns = places + [v for v in UNMATCHED if v in overall.index]
    share = states.pivot(index="segment", columns="value", values="share").reindex(columns=columns).sort_index()
    users = states.pivot(index="segment", columns="value", values="users").reindex_like(share).fillna(0)
    fig = go.Figure(go.Heatmap(
        z=share.fillna(0).to_numpy(), x=columns, y=[f"segment {s}" for s in share.index], colorscale="Blues",
        customdata=users.to_numpy(), colorbar={"title": "share", "tickformat": ".0%"},
        hovertemplate="%{y}, %{x}: %{z:.1%} (%{customdata} users)<extra></extra>"))
    fig.update_layout(title="Share of each segment's users by US state (by zip code; last: no state found)",
                      height=200 + 40 * len(share), xaxis={"tickangle": -60})
    unmatched = users.reindex(columns=[v for v in UNMATCHED if v in users.columns]).astype(int)
    unmatched.index = [f"segment {s}" for s in unmatched.index]
    table = unmatched.reset_index(names="segment") if len(unmatched.columns) else pd.DataFrame()
    return (f"<p class='states'>States come from the zip code (the offline zipcodes package): "
            f"{html.escape(unmatched_line(states.to_dict('records')))}, counted in their own columns, not "
            "dropped.</p>"
            + (table_html(table) if len(table) else "") + figure_html(fig))


def assigner_html(metrics: pd.Series, confusion: pd.DataFrame) -> str:
    """Holdout accuracy beside the majority-class rate, and the holdout confusion matrix.

    Parameters
    ----------
    metrics : pandas.Series
        The run's ``gold/assigner_metrics`` row.
    confusion : pandas.DataFrame
        Holdout users counted by ``segment`` and ``assigned_segment`` (column ``count``).

    Returns
    -------
    str
        A sentence and two charts.
    """
    fig = go.Figure(go.Bar(x=["assigner accuracy", "always the largest segment", "macro F1"],
                           y=[metrics["accuracy"], metrics["majority_rate"], metrics["macro_f1"]],
                           marker_color=[PALETTE[0], NOISE_COLOUR, PALETTE[1]],
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
    return text + figure_html(fig) + figure_html(heat)


# ---------------------------------------------------------------- sections


def als_section(run: ReportRun) -> Rendered:
    """'ALS taste embeddings: held-out error' from ``gold/als_metrics``."""
    als = run.gold("als_metrics")
    if als is None:
        return Rendered([section("ALS taste embeddings", missing("the ratings stage"))], 0)
    return Rendered([section("ALS taste embeddings: held-out error", als_html(als.iloc[0]))], 1)


def ratings_ingest_section(run: ReportRun) -> Rendered:
    """'Ratings ingest': bronze and quarantined rows per input file, with the reasons."""
    return Rendered([section("Ratings ingest", ratings_ingest_html(run))], 0)


def ratings_ingest_html(run: ReportRun) -> str:
    """The body of :func:`ratings_ingest_section` (bronze/{ratings,users,items} are whole-table
    overwrites: the state of the latest ratings run)."""
    rejected = run.table(run.tables.bronze("quarantine"), "ratings")
    if rejected is None:
        return missing("the ratings stage")
    kept = {name: read_delta(run.spark, run.tables.bronze(name), "ratings").count()
            for name in ("ratings", "users", "items")}
    rejected = (rejected.groupBy("table", "reason").count()
                .orderBy("table", F.desc("count")).toPandas())  # a handful of reasons
    rows = [{"table": name, "bronze rows": kept[name],
             "quarantined rows": int(rejected.loc[rejected["table"] == name, "count"].sum()),
             "reasons": ", ".join(f"{reason} {int(n)}" for reason, n in
                                  rejected.loc[rejected["table"] == name, ["reason", "count"]].to_numpy())}
            for name in kept]
    return ("<p>Every line of the three files is either in bronze or quarantined with its reason (the "
            "ratings stage checks the counts); bronze holds the latest ratings run.</p>"
            + table_html(pd.DataFrame(rows)))


def tastes_section(run: ReportRun) -> Rendered:
    """Top-10 titles per rating and segment, demographics and genre preference (the tastes stage)."""
    titles, people, genres = run.gold("top_titles"), run.gold("segment_demographics"), run.gold("genre_preference")
    if titles is None or people is None or genres is None:
        return Rendered([section("Tastes", missing("the tastes stage"))], 0)
    sizes = (people[people["attribute"] == "gender"].groupby("segment")["users"].sum()
             .astype(int).to_dict())
    sizes[ALL_USERS] = sum(sizes.values())
    return Rendered([section("Top-10 titles per rating, per segment", titles_html(titles, sizes)),
                     section("Who is in each segment", figure_html(demographics_figure(people))),
                     section("Where each segment lives", states_html(people)),
                     section("Genre preference", figure_html(genre_figure(genres)))], 3)


def separation_section(run: ReportRun) -> Rendered:
    """'What separates the segments': ``gold/block_variance`` charted, with the gender check."""
    blocks, people = run.gold("block_variance"), run.gold("segment_demographics")
    if blocks is None or people is None:
        return Rendered([section("What separates the segments", missing("the tastes stage"))], 0)
    return Rendered([section("What separates the segments: tastes or demographics",
                             separation_html(blocks, people))], 1)


def assigner_section(run: ReportRun) -> Rendered:
    """'Assigning new users': the assigner's holdout scores and confusion matrix (the assign stage)."""
    metrics = run.gold("assigner_metrics")
    if metrics is None:
        return Rendered([section("Assigning new users", missing("the assign stage"))], 0)
    confusion = (run.rows(run.tables.gold("assignments"), "assign").where(F.col("holdout"))
                 .groupBy("segment", "assigned_segment").count().toPandas())  # k x k cells
    return Rendered([section("Assigning new users (XGBoost on ratings + demographics)",
                             assigner_html(metrics.iloc[0], confusion))], 2)


SECTIONS: tuple[Section, ...] = (
    require_gold_rows, choice_of_k_section, segments_section, segment_stability_section,
    als_section, ratings_ingest_section, separation_section, tastes_section, assigner_section,
    run_record_section,
)
"""The page of a ratings config, in order."""


def report(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``report`` stage of a ratings config: :func:`seglake.report.build_report` with :data:`SECTIONS`.

    Returns the page's :class:`StageResult` as ``build_report`` does; a :class:`SeglakeError`
    when the config has no ``ratings`` section, or the run has no gold rows.
    """
    if config.ratings is None:
        raise SeglakeError(f"{config.source_file}: the MovieLens report needs a 'ratings' section")
    return build_report(spark, config, run_id, sections=SECTIONS)
