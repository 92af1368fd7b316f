"""The building blocks of a report page: HTML tables, plotly charts, sections and the page itself.

Every helper here is pure (pandas or plotly in, an HTML string out) except :func:`small`, which
brings an already filtered Spark frame to the driver. Sections built from them go to
:func:`seglake.report.build_report`, which writes the page with :func:`page`: plotly.js embedded
once in the ``<head>``, so each chart is a ``<div>`` and the file opens offline.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from seglake.core.config import SeglakeConfig

# Marker colours by segment or cluster number (plotly's D3 palette, then a darker second round).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
NOISE_COLOUR = "#c7c7c7"  # density noise (cluster -1) and baselines drawn beside a model
SMALL_ROWS = 10_000


def colour(index: int) -> str:
    """The :data:`PALETTE` colour of a segment or cluster number (wrapping around).

    Parameters
    ----------
    index : int
        A segment or cluster number (a numpy integer is fine).

    Returns
    -------
    str
        A ``#rrggbb`` colour.

    Examples
    --------
    >>> colour(0), colour(17)
    ('#1f77b4', '#ff7f0e')
    """
    return PALETTE[int(index) % len(PALETTE)]


def small(frame: DataFrame | None, limit: int = SMALL_ROWS) -> pd.DataFrame | None:
    """A small Spark frame on the driver as pandas, ``None`` staying ``None``.

    Gold tables read by the report are per-k, per-segment or per-feature: small by construction;
    the limit guards against a mis-keyed table ever pulling entity-level rows to the driver.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame or None
        Usually one run's rows from :func:`seglake.core.tables.read_run` (``None``: not in the run).
    limit : int
        At most this many rows are collected.

    Returns
    -------
    pandas.DataFrame or None
    """
    return None if frame is None else frame.limit(limit).toPandas()


def figure_html(fig: go.Figure) -> str:
    """A plotly figure as an HTML ``<div>`` without plotly.js (the page embeds it once).

    Parameters
    ----------
    fig : plotly.graph_objects.Figure

    Returns
    -------
    str
        The chart's ``<div>`` and the script drawing it; the plotly logo is hidden.

    Examples
    --------
    >>> part = figure_html(go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    >>> part.startswith("<div"), "Plotly.newPlot" in part, "plotly.js v" in part
    (True, True, False)
    """
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def table_html(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pandas frame as a plain HTML ``<table>`` (no index), its cells formatted for reading.

    Floats get ``digits`` decimals below 1,000 and none above, with thousands separators; NaN is an
    empty cell; integers get thousands separators; everything else is escaped text.

    Parameters
    ----------
    frame : pandas.DataFrame
    digits : int
        Decimals of floats below 1,000.

    Returns
    -------
    str

    Examples
    --------
    >>> table_html(pd.DataFrame({"k": [2, 3], "sse": [0.51234, float("nan")], "note": ["a<b", 1234.5]}))
    '<table><thead><tr><th>k</th><th>sse</th><th>note</th></tr></thead><tbody><tr><td>2</td><td>0.512</td><td>a&lt;b</td></tr><tr><td>3</td><td></td><td>1,234</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v, digits)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, body: str) -> str:
    """One titled ``<section>`` of the page.

    Parameters
    ----------
    title : str
        Plain text (escaped).
    body : str
        HTML, inserted as is.

    Returns
    -------
    str

    Examples
    --------
    >>> section("Choice of k", "<p>k=4</p>")
    '<section><h2>Choice of k</h2><p>k=4</p></section>'
    """
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def missing(what: str) -> str:
    """The line standing in for a section whose table the run did not produce.

    Parameters
    ----------
    what : str
        What is missing, e.g. ``"the sweep stage"`` (plain text, escaped).

    Returns
    -------
    str

    Examples
    --------
    >>> missing("the density stage")
    "<p class='missing'>Not in this run: the density stage.</p>"
    """
    return f"<p class='missing'>Not in this run: {html.escape(what)}.</p>"


def reason_html(sweep: pd.DataFrame) -> str:
    """The chosen row's ``reason`` of a sweep table as a bold paragraph ('' without a chosen row).

    Parameters
    ----------
    sweep : pandas.DataFrame
        With boolean ``chosen`` and text ``reason`` columns.

    Returns
    -------
    str

    Examples
    --------
    >>> reason_html(pd.DataFrame({"chosen": [False, True], "reason": ["", "best silhouette"]}))
    "<p class='reason'>best silhouette</p>"
    """
    reason = sweep.loc[sweep["chosen"], "reason"]
    return f"<p class='reason'>{html.escape(str(reason.iloc[0]))}</p>" if len(reason) else ""


def k_curves(sweep: pd.DataFrame, left: list[tuple[str, str, bool]], right: list[tuple[str, str, bool]],
             titles: tuple[str, str, str], height: int) -> go.Figure:
    """Curves over ``k`` on two y axes with the chosen k marked: the sweep charts of every use case.

    Parameters
    ----------
    sweep : pandas.DataFrame
        ``k``, ``chosen`` and the plotted columns, sorted by ``k``.
    left, right : list of (column, name, dotted)
        Curves on the left and right axes; a column absent from ``sweep`` is skipped.
    titles : (str, str, str)
        The chart's title and the left and right axis titles.
    height : int

    Examples
    --------
    >>> sweep = pd.DataFrame({"k": [2, 3], "a": [2.0, 1.0], "b": [0.4, 0.6], "chosen": [False, True]})
    >>> fig = k_curves(sweep, [("a", "A", False)], [("b", "B", True), ("c", "C", True)], ("t", "A", "B"), 300)
    >>> [t.name for t in fig.data], fig.layout.annotations[0].text
    (['A', 'B'], 'chosen k=3')
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for curves, secondary in ((left, False), (right, True)):
        for column, name, dotted in (c for c in curves if c[0] in sweep):
            fig.add_trace(go.Scatter(x=sweep["k"], y=sweep[column], name=name, mode="lines+markers",
                                     line={"dash": "dot"} if dotted else None), secondary_y=secondary)
    mark_chosen_k(fig, sweep)
    fig.update_layout(title=titles[0], xaxis_title="k", height=height, legend={"orientation": "h"})
    fig.update_yaxes(title_text=titles[1], secondary_y=False)
    fig.update_yaxes(title_text=titles[2], secondary_y=True)
    return fig


def mark_chosen_k(fig: go.Figure, sweep: pd.DataFrame) -> go.Figure:
    """Draw a dashed vertical line at the sweep's chosen ``k`` (nothing without a chosen row).

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        A chart with ``k`` on the x axis; changed in place.
    sweep : pandas.DataFrame
        With ``k`` and boolean ``chosen`` columns.

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig``.

    Examples
    --------
    >>> sweep = pd.DataFrame({"k": [2, 3], "chosen": [False, True]})
    >>> mark_chosen_k(go.Figure(), sweep).layout.annotations[0].text
    'chosen k=3'
    """
    chosen = sweep.loc[sweep["chosen"], "k"]
    if len(chosen):
        fig.add_vline(x=int(chosen.iloc[0]), line_dash="dash", line_color="black",
                      annotation_text=f"chosen k={int(chosen.iloc[0])}")
    return fig


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


def page(config: SeglakeConfig, run_id: str, body: str) -> str:
    """The whole self-contained page: title, :data:`STYLE`, plotly.js, then ``body``.

    Parameters
    ----------
    config : SeglakeConfig
        Its ``name``, ``source_file`` and ``config_hash`` head the page.
    run_id : str
    body : str
        The sections, in order.

    Returns
    -------
    str
        An HTML document (a few MB: plotly.js is inlined so the file opens offline).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> config = SimpleNamespace(name="users", source_file="conf/users.yaml", config_hash="ab12")
    >>> text = page(config, "r1", section("Run record", ""))
    >>> text.startswith("<!DOCTYPE html>"), "<title>seglake · users · run r1</title>" in text
    (True, True)
    >>> text.endswith("<section><h2>Run record</h2></section></body></html>")
    True
    """
    title = f"seglake · {config.name} · run {run_id}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body><h1>{html.escape(config.name)}</h1><p class='sub'>run {html.escape(run_id)} · "
            f"config {html.escape(config.source_file)} ({config.config_hash})</p>{body}</body></html>")
