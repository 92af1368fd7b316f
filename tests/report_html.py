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
import shutil
import subprocess
from pathlib import Path

import numpy as np

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


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


def check_in_browser(page: Path, name: str, min_charts: int = 5) -> None:
    """Open the report in headless Chromium: no JavaScript errors, an SVG in every plotly div."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is required (make setup installs it)"
    ARTIFACTS.mkdir(exist_ok=True)
    probe = page.with_name("probe.html")
    # Count the drawn charts and collect errors from inside the page, then print a verdict in the
    # DOM that --dump-dom returns; the original page stays untouched for the screenshot.
    script = """
<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message)));
window.addEventListener('load',()=>setTimeout(()=>{const divs=[...document.querySelectorAll('.plotly-graph-div')];
const drawn=divs.filter(d=>d.querySelector('svg.main-svg')).length;
const v=document.createElement('pre');v.id='verdict';v.textContent=JSON.stringify({divs:divs.length,drawn,errors:window.__errors});
document.body.appendChild(v);},1500));</script>"""
    text = page.read_text()
    probe.write_text(text.replace("<head>", "<head>" + script, 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync",
             f"--user-data-dir={page.parent / 'chromium-profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=180).stdout
    verdict = dom.split('<pre id="verdict">', 1)[1].split("</pre>", 1)[0]
    result = json.loads(verdict.replace("&quot;", '"'))
    assert result["errors"] == []
    assert result["divs"] >= min_charts and result["drawn"] == result["divs"]
    shot = ARTIFACTS / f"report-{name}.png"
    subprocess.run([browser, *flags, "--window-size=1300,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 20_000  # a blank page compresses to a few KB
