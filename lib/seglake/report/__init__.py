"""The run report: one self-contained HTML file per run, built from the small gold tables only.

``<lakehouse>/<name>/reports/<run_id>/index.html`` (or under ``report.dir``): plotly charts with the
plotly.js bundle embedded once, so the file opens offline and can be mailed. Sections whose table a
run did not produce say so instead of disappearing. The MovieLens and text-cluster sections are in
:mod:`seglake.report.usecases_tmp`.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, delta_exists

MAP_POINTS = 20_000  # plotted sample points: enough to see every cluster, light enough for a browser
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]


def report_path(config: SeglakeConfig, run_id: str) -> Path:
    """Where a run's report is written (a local path: reports are read by people, not Spark)."""
    root = config.lakehouse
    if "://" in root or root.startswith(("dbfs:", "file:")):
        root = root.split(":", 1)[1].lstrip("/") if root.startswith("file:") else ""
        if not root:
            raise SeglakeError(f"{config.source_file}: lakehouse {config.lakehouse} is not a local "
                               "folder; reports are written locally — run the report from a machine "
                               "with the lakehouse mounted")
        root = "/" + root
    return Path(root) / config.name / "reports" / run_id / "index.html"


def _run_rows(spark: SparkSession, path: str, run_id: str) -> DataFrame | None:
    if not delta_exists(spark, path):
        return None
    rows = spark.read.format("delta").load(path).where(F.col("run_id") == run_id)
    return rows if rows.limit(1).count() else None


def _small(frame: DataFrame | None, limit: int = 10_000) -> pd.DataFrame | None:
    # Gold tables read here are per-k, per-segment or per-feature: small by construction; the limit
    # guards against a mis-keyed table ever pulling entity-level rows to the driver.
    return None if frame is None else frame.limit(limit).toPandas()


def _figure_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _table_html(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value):
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, (int,)) and not isinstance(value, bool):
            return f"{value:,}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sweep_figure(sweep: pd.DataFrame) -> go.Figure:
    """SSE and silhouette over k on two axes, the chosen k marked (the seed's 'Clustering effect')."""
    sweep = sweep.sort_values("k")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=sweep["k"], y=sweep["sse"], name="SSE (mean distance to center)",
                             mode="lines+markers"), secondary_y=False)
    fig.add_trace(go.Scatter(x=sweep["k"], y=sweep["silhouette"], name="silhouette (MLlib)",
                             mode="lines+markers"), secondary_y=True)
    if "silhouette_exact" in sweep:
        fig.add_trace(go.Scatter(x=sweep["k"], y=sweep["silhouette_exact"], name="silhouette (exact, sample)",
                                 mode="lines+markers", line={"dash": "dot"}), secondary_y=True)
    chosen = sweep.loc[sweep["chosen"], "k"]
    if len(chosen):
        fig.add_vline(x=int(chosen.iloc[0]), line_dash="dash", line_color="black",
                      annotation_text=f"chosen k={int(chosen.iloc[0])}")
    fig.update_layout(title="Clustering effect", xaxis_title="k", height=420, legend={"orientation": "h"})
    fig.update_yaxes(title_text="SSE", secondary_y=False)
    fig.update_yaxes(title_text="silhouette", secondary_y=True)
    return fig


def size_figure(sizes: pd.DataFrame, label: str) -> go.Figure:
    """Bars of segment sizes with their shares."""
    fig = go.Figure(go.Bar(x=sizes[label].astype(str), y=sizes["size"],
                           text=[f"{s:.1%}" for s in sizes["share"]], textposition="outside"))
    fig.update_layout(title=f"{label.capitalize()} sizes", xaxis_title=label, yaxis_title="entities", height=380)
    return fig


def distribution_figure(profiles: pd.DataFrame) -> go.Figure:
    """Per-segment p10–median–p90 of every raw feature, on log axes (features are heavy-tailed)."""
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
            marker={"color": [PALETTE[s % len(PALETTE)] for s in part["segment"]], "size": 9},
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
    """The 2-D UMAP map of the sample, coloured by density cluster (noise in grey)."""
    fig = go.Figure()
    for cluster, part in points.groupby("cluster"):
        colour = "#c7c7c7" if cluster == -1 else PALETTE[int(cluster) % len(PALETTE)]
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name="noise" if cluster == -1 else f"cluster {cluster}",
            marker={"size": 4, "color": colour, "opacity": 0.7},
            customdata=part[["entity_id", "group", "cluster_probability"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>group %{customdata[1]}<br>probability %{customdata[2]:.2f}",
        ))
    fig.update_layout(title="2-D map of the sample (UMAP), coloured by cluster", height=560)
    return fig


def shap_figure(part: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of mean |SHAP| for one target's top features, coloured by direction."""
    part = part.sort_values("rank", ascending=False)
    colours = ["#d62728" if d == "higher" else "#1f77b4" for d in part["direction"]]
    fig = go.Figure(go.Bar(x=part["mean_abs_shap"], y=part["feature"], orientation="h",
                           marker_color=colours, text=part["direction"], textposition="auto"))
    fig.update_layout(title=title, height=90 + 28 * len(part), margin={"l": 10, "r": 10, "t": 40, "b": 30},
                      xaxis_title="mean |SHAP|")
    return fig


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _missing(what: str) -> str:
    return f"<p class='missing'>Not in this run: {html.escape(what)}.</p>"


def build_report(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Write the run's HTML report from its gold tables.

    A ``texts`` config gets the text-cluster sections and a ``ratings`` config the MovieLens ones
    after its sweep and segments (both in :mod:`seglake.report.usecases_tmp`).

    Returns
    -------
    StageResult
        ``details['path']`` is the written file; ``details['charts']`` the number of charts.
    """
    started = time.monotonic()
    tables = Tables.of(config)
    if config.texts is not None:
        from seglake.report.usecases_tmp import text_sections  # imports this module: loaded on use

        sections, charts = text_sections(spark, tables, run_id)
    else:
        sections, charts = _segmentation_sections(spark, config, tables, run_id)
    path = report_path(config, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(config, run_id, "".join(sections)))
    return StageResult("report", 0, charts, time.monotonic() - started,
                       {"path": str(path), "charts": charts}, f"{charts} charts in {path}")


def _segmentation_sections(spark: SparkSession, config: SeglakeConfig, tables: Tables,
                           run_id: str) -> tuple[list[str], int]:
    read = {name: _small(_run_rows(spark, tables.gold(name), run_id))
            for name in ("sweep", "runs", "profiles", "cluster_quality", "explanations", "descriptions")}
    if all(v is None for v in read.values()):
        raise SeglakeError(f"no gold rows for run '{run_id}' under {tables.root}/gold: run its stages first")
    sections, charts = [], 0

    sweep = read["sweep"]
    if sweep is not None:
        reason = sweep.loc[sweep["chosen"], "reason"]
        text = f"<p class='reason'>{html.escape(str(reason.iloc[0]))}</p>" if len(reason) else ""
        shown = [c for c in ("k", "wssse", "sse", "silhouette", "silhouette_exact", "min_cluster_share", "chosen")
                 if c in sweep]
        sections.append(_section("Choice of k", text + _figure_html(sweep_figure(sweep))
                                 + _table_html(sweep.sort_values("k")[shown])))
        charts += 1
    else:
        sections.append(_section("Choice of k", _missing("the sweep stage")))

    profiles = read["profiles"]
    if profiles is not None:
        sizes = profiles.drop_duplicates("segment")[["segment", "size", "share"]].sort_values("segment")
        wide = profiles.pivot(index="segment", columns="feature", values="mean").reset_index()
        wide = sizes.merge(wide, on="segment")
        sections.append(_section(
            "Segments in original units (mean per feature)",
            _table_html(wide) + _figure_html(size_figure(sizes, "segment"))
            + _figure_html(distribution_figure(profiles))))
        charts += 2
    else:
        sections.append(_section("Segments", _missing("the segment stage")))
    if config.ratings is not None:  # MovieLens: no density, explain or events ingest; its own tables
        from seglake.report.usecases_tmp import movielens_sections  # imports this module: loaded on use

        more, more_charts = movielens_sections(spark, tables, run_id)
        sections, charts = sections + more, charts + more_charts
        if read["runs"] is not None:
            sections.append(_section("Run record", _table_html(read["runs"])))
        return sections, charts

    clusters_path = tables.gold("clusters")
    points = None
    if delta_exists(spark, clusters_path):
        sample = (spark.read.format("delta").load(clusters_path)
                  .where((F.col("run_id") == run_id) & F.col("in_sample")))
        points = sample.orderBy(F.rand(0)).limit(MAP_POINTS).toPandas()  # bounded by MAP_POINTS
    if points is not None and len(points):
        quality = read["cluster_quality"]
        body = _figure_html(map_figure(points)) + (_table_html(quality) if quality is not None else "")
        sections.append(_section("Density clusters and surrogate fidelity", body))
        charts += 1
    else:
        sections.append(_section("Density clusters", _missing("the density stage")))

    explanations, descriptions = read["explanations"], read["descriptions"]
    if explanations is not None and descriptions is not None:
        blocks = []
        for row in descriptions.sort_values(["kind", "target"]).itertuples(index=False):
            part = explanations[(explanations["kind"] == row.kind) & (explanations["target"] == row.target)]
            part = part[part["rank"] <= config.explain.top_features + 2]
            scores = part.iloc[0] if len(part) else None
            score_text = (f"F1 {scores['f1']:.2f} (precision {scores['precision']:.2f}, recall "
                          f"{scores['recall']:.2f})" if scores is not None else "")
            chart = _figure_html(shap_figure(part, f"{row.kind} {row.target}")) if len(part) else ""
            charts += 1 if len(part) else 0
            blocks.append(f"<div class='explain'><div class='text'><p>{html.escape(row.description)}</p>"
                          f"<p class='score'>{score_text}</p></div><div class='chart'>{chart}</div></div>")
        sections.append(_section("Why each group exists (one-vs-rest XGBoost + SHAP)", "".join(blocks)))
    else:
        sections.append(_section("Explanations", _missing("the explain stage")))

    sections.append(_section("Ingest reconciliation", _ingest_html(spark, tables)))
    runs = read["runs"]
    if runs is not None:
        sections.append(_section("Run record", _table_html(runs)))
    return sections, charts


def _ingest_html(spark: SparkSession, tables: Tables) -> str:
    if not delta_exists(spark, tables.ingest_log):
        return _missing("an ingest (the source is a ready entity table)")
    log = spark.read.format("delta").load(tables.ingest_log)
    totals = log.agg(F.count("*").alias("files"), F.sum("input_rows").alias("input_rows"),
                     F.sum("bronze_rows").alias("bronze_rows"),
                     F.sum("quarantined_rows").alias("quarantined_rows")).toPandas()
    reasons = (spark.read.format("delta").load(tables.quarantine)
               .select(F.split("reason", ";")[0].alias("reason")).groupBy("reason").count()
               .orderBy(F.desc("count")).toPandas()) if delta_exists(spark, tables.quarantine) else None
    row = totals.iloc[0]
    balanced = int(row["input_rows"] or 0) == int(row["bronze_rows"] or 0) + int(row["quarantined_rows"] or 0)
    verdict = "reconciled" if balanced else "does NOT reconcile"
    text = (f"<p>input {int(row['input_rows'] or 0):,} rows = bronze {int(row['bronze_rows'] or 0):,} + "
            f"quarantine {int(row['quarantined_rows'] or 0):,} ({verdict}) over {int(row['files'])} files.</p>")
    return text + (_table_html(reasons) if reasons is not None and len(reasons) else "<p>No rows quarantined.</p>")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:24px;color:#222}h1{margin-bottom:0}.sub{color:#666;margin-top:4px}
section{margin:28px 0;padding-top:8px;border-top:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:10px 0;display:block;overflow-x:auto}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}th{background:#f5f5f5}
.reason{font-weight:600}.missing{color:#999;font-style:italic}
.explain{display:flex;gap:16px;align-items:center;border-bottom:1px dashed #eee}
.explain .text{flex:1}.explain .chart{flex:1;min-width:420px}.score{color:#666;font-size:13px}
.note{color:#666;font-size:13px}.titles h3{margin:18px 0 4px}
.keywords td:last-child{text-align:left}.titles td:nth-child(even){text-align:left}
"""


def _page(config: SeglakeConfig, run_id: str, body: str) -> str:
    title = f"seglake · {config.name} · run {run_id}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body><h1>{html.escape(config.name)}</h1><p class='sub'>run {html.escape(run_id)} · "
            f"config {html.escape(config.source_file)} ({config.config_hash})</p>{body}</body></html>")
