"""Reading a written report back without a browser: its plotly figures and its HTML tables.

Plotly writes each chart as ``Plotly.newPlot("<div id>", [traces], {layout}, ...)``, with numeric
arrays as base64 typed arrays (``{"dtype": "f8", "bdata": ...}``); these helpers decode them so tests
assert on the plotted values themselves.
"""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np


def _decode(value):
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def figures(page: str) -> list[dict]:
    """Every plotly figure of ``page`` as ``{"data": [traces], "layout": {...}}``, arrays decoded."""
    decoder, found = json.JSONDecoder(), []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        start = re.compile(r"\s*,\s*").match(page, end).end()
        layout, _ = decoder.raw_decode(page, start)
        found.append({"data": _decode(data), "layout": layout})
    return found


def title(figure: dict) -> str:
    """A figure's title text ('' when it has none)."""
    value = figure["layout"].get("title", "")
    return value.get("text", "") if isinstance(value, dict) else str(value)


def tables(fragment: str) -> list[list[list[str]]]:
    """Every ``<table>`` in ``fragment`` as rows of unescaped cell texts (the header row first)."""
    found = []
    for table in re.findall(r"<table>(.*?)</table>", fragment, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        found.append([[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row, flags=re.S)]
                      for row in rows])
    return found
