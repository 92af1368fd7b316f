"""``seglake serve``: a run's segmenter pyfunc over HTTP on 127.0.0.1, with the standard library.

The model is loaded with ``mlflow.pyfunc.load_model`` (no Spark session, no JVM) and answers

- ``POST /invocations`` with a JSON body in MLflow's scoring format (``{"dataframe_records":
  [...]}``, ``{"dataframe_split": {"columns": [...], "data": [...]}}``, ``{"inputs": ...}``), or
  simply one row object or a list of them: ``{"predictions": [{"segment": ..., ...}, ...]}``;
- ``GET /ping`` (or ``/health``): ``{"status": "ok", "model_run": ...}``.

A bad request gets status 400 and ``{"error": "<one line>"}``. This is lighter than ``mlflow
models serve`` (no uvicorn worker or conda/virtualenv set-up) and answers the same JSON.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

HOST = "127.0.0.1"


def request_frame(body: Any) -> pd.DataFrame:
    """The rows of a request body as a DataFrame (see the module docstring for the formats).

    Examples
    --------
    >>> request_frame({"dataframe_split": {"columns": ["likes"], "data": [[1], [None]]}})
       likes
    0    1.0
    1    NaN
    >>> request_frame({"likes": 3, "country": "fr"}).to_dict("records")
    [{'likes': 3, 'country': 'fr'}]
    >>> request_frame("likes=3")
    Traceback (most recent call last):
    ValueError: the body must be a JSON object or a list of row objects, not str
    """
    if isinstance(body, dict):
        if "dataframe_split" in body:
            split = body["dataframe_split"]
            return pd.DataFrame(split.get("data", []), columns=split.get("columns"), index=split.get("index"))
        if "dataframe_records" in body or "inputs" in body:
            body = body.get("dataframe_records", body.get("inputs"))
            if isinstance(body, dict) and all(isinstance(v, list) for v in body.values()):
                return pd.DataFrame(body)  # "inputs" as columns
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        raise ValueError(f"the body must be a JSON object or a list of row objects, not {type(body).__name__}")
    return pd.DataFrame.from_records(body)


def predictions(labelled: pd.DataFrame) -> list[dict[str, Any]]:
    """Labelled rows as JSON-ready records (NaN and missing clusters as null)."""
    return json.loads(labelled.to_json(orient="records"))


def make_server(model_path: str | Path, port: int = 8080) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0: a free port) answering with the pyfunc at
    ``model_path``; call ``serve_forever()`` on it, ``shutdown()`` to stop."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(model_path))
    run_id = model.unwrap_python_model().segmenter.run_id

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client sends many requests on one connection

        def setup(self) -> None:
            super().setup()
            # headers and body leave in two writes: with Nagle's algorithm the body waits for the
            # client's delayed ACK of the headers, 40 ms on Linux, for every response
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path in ("/ping", "/health"):
                self._answer(200, {"status": "ok", "model_run": run_id})
            else:
                self._answer(404, {"error": f"no such path {self.path}: GET /ping or POST /invocations"})

        def do_POST(self) -> None:
            if self.path not in ("/invocations", "/predict"):
                self._answer(404, {"error": f"no such path {self.path}: POST /invocations"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                frame = request_frame(json.loads(self.rfile.read(length) or b"null"))
                labelled = model.predict(frame)
            except Exception as err:  # noqa: BLE001 — a bad request is the client's: one line, status 400
                lines = [line for line in str(err).splitlines() if line.strip()]
                self._answer(400, {"error": (lines[0] if lines else type(err).__name__)[:500]})
                return
            self._answer(200, {"predictions": predictions(labelled)})

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise
            return

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.model_run = run_id  # type: ignore[attr-defined]
    return server


def serve(model_path: str | Path, port: int = 8080, echo: Callable[[str], None] = print) -> None:
    """Answer requests until interrupted (Ctrl-C or SIGTERM)."""
    import signal

    server = make_server(model_path, port)
    bound = server.server_address[1]

    def stop(signum, frame) -> None:  # SIGTERM: shut down like Ctrl-C
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    echo(f"[serve] model run {server.model_run} on http://{HOST}:{bound}: "  # type: ignore[attr-defined]
         f"POST /invocations, GET /ping")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        echo("[serve] stopped")
