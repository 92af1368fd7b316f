"""Score raw records with a saved claim classifier: one JSON record, JSON lines or a CSV batch.

A classifier folder (written by :func:`seglake.usecases.claims.train.train_classifier`) is a Spark ML
``PipelineModel`` plus three small JSON files that MLlib's loader ignores::

    <lakehouse>/<name>/models/<run_id>/classifier/
        metadata/, stages/   the PipelineModel: tokenizer → counts → IDF, indexers → one-hot,
                             log1p, assembler, classifier, index → class name
        inputs.json          the contract: text, categorical and numeric fields, id, class order
        metrics.json         how good it is: accuracy, F1, confusion matrices, split sizes
        manifest.json        the sha256 of each of the above, in the one manifest format of
                             :mod:`seglake.core.artifacts`; :func:`load_classifier` refuses a
                             folder whose files do not match it

Records are checked here in plain Python first, so that a bad record gets an error naming its field
and value (a Spark cast would only give a null), and the valid records are then scored together in
one Spark job. Every stage of the model works row by row, so a record's prediction does not depend
on what else is in the batch. For batches too large for one machine, call :func:`predict` on a
Spark DataFrame instead of going through files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.artifacts import MANIFEST, path_exists, read_manifest, verified_bytes, verify_saved
from seglake.core.errors import SeglakeError, first_line

INPUTS_FILE = "inputs.json"
METRICS_FILE = "metrics.json"
MODEL_FOLDER = "classifier"
# The folders MLlib writes for a PipelineModel saved at the classifier folder itself.
PIPELINE_PARTS = ("metadata", "stages")
PREDICTED_CLASS = "predicted_class"  # the model's last stage writes the class name here
ROW = "row"


@dataclass(frozen=True)
class ModelInputs:
    """What a saved classifier needs from each record, and what its outputs mean.

    Attributes
    ----------
    text : str
        The free-text field.
    categorical, numeric : tuple of str
        Fields read as text and as non-negative numbers.
    id : str or None
        A field copied to the output when present; the model does not use it.
    classes : tuple of str
        ``(negative, positive)``: index 0 and 1 of the model's ``prediction`` and ``probability``.
    """

    text: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    id: str | None
    classes: tuple[str, str]

    @property
    def fields(self) -> list[str]:
        """Every field the model reads, in the order they are checked."""
        return [self.text, *self.categorical, *self.numeric]

    def probability_column(self, cls: str) -> str:
        """``probability_<class>`` with anything but letters, digits and ``_`` turned into ``_``.

        >>> ModelInputs("text", (), (), None, ("opinion", "claim")).probability_column("not a claim")
        'probability_not_a_claim'
        """
        return "probability_" + re.sub(r"\W+", "_", cls)

    def spark_schema(self) -> T.StructType:
        """Schema of a frame of checked records (plus the ``row`` position) for :func:`predict`."""
        return T.StructType(
            [T.StructField(ROW, T.LongType())]
            + [T.StructField(f, T.StringType()) for f in (self.text, *self.categorical)]
            + [T.StructField(f, T.DoubleType()) for f in self.numeric]
        )

    def to_json(self) -> str:
        """The ``inputs.json`` text."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelInputs":
        """Parse ``inputs.json``.

        >>> inputs = ModelInputs("text", ("status",), ("views",), "id", ("opinion", "claim"))
        >>> ModelInputs.from_json(inputs.to_json()) == inputs
        True
        """
        raw = json.loads(text)
        return cls(raw["text"], tuple(raw["categorical"]), tuple(raw["numeric"]), raw.get("id"),
                   (raw["classes"][0], raw["classes"][1]))


def load_classifier(spark: SparkSession, path: str) -> tuple[PipelineModel, ModelInputs]:
    """Load a classifier folder, or the run folder that holds one, after checking its manifest.

    Every artefact (the PipelineModel's ``metadata/`` and ``stages/``, ``inputs.json``,
    ``metrics.json``) must match its sha256 in ``manifest.json`` before anything is loaded.

    Parameters
    ----------
    spark : SparkSession
    path : str
        ``models/<run_id>/classifier`` or ``models/<run_id>`` (local path or Hadoop URI).

    Returns
    -------
    (PipelineModel, ModelInputs)

    Raises
    ------
    SeglakeError
        When neither ``path`` nor ``path/classifier`` holds a classifier, or the one found has no
        manifest (written by an older version: train it again), or a file of it differs from its
        manifest.
    """
    path = path.rstrip("/")
    for folder in (path, f"{path}/{MODEL_FOLDER}"):
        if path_exists(spark, f"{folder}/{INPUTS_FILE}") and path_exists(spark, f"{folder}/metadata"):
            try:
                inputs = _verified_inputs(spark, folder)
            except SeglakeError as err:
                raise SeglakeError(f"--model: {err}") from err
            return PipelineModel.load(folder), inputs
    raise SeglakeError(
        f"--model: no classifier at {path} (expected a folder with metadata/ and {INPUTS_FILE}, "
        f"as the classify stage writes under models/<run_id>/{MODEL_FOLDER})"
    )


def _verified_inputs(spark: SparkSession, folder: str) -> ModelInputs:
    """Check every artefact of a classifier folder against its manifest; return its inputs."""
    listed = read_manifest(spark, folder, produced_by="classify")["files"]
    missing = [name for name in (*PIPELINE_PARTS, INPUTS_FILE, METRICS_FILE) if name not in listed]
    if missing:
        raise SeglakeError(f"{folder}/{MANIFEST} does not list {', '.join(missing)}: refusing to load it")
    for name in PIPELINE_PARTS:
        verify_saved(spark, folder, name)
    verified_bytes(spark, folder, METRICS_FILE)
    return ModelInputs.from_json(verified_bytes(spark, folder, INPUTS_FILE))


def predict(model: PipelineModel, frame: DataFrame, inputs: ModelInputs) -> DataFrame:
    """Add ``prediction`` (class name) and one ``probability_<class>`` column per class to ``frame``.

    Parameters
    ----------
    model : PipelineModel
        A loaded classifier.
    frame : DataFrame
        Checked records: the fields of ``inputs`` (numbers as any numeric type) and any others,
        which are kept as they are.
    inputs : ModelInputs

    Returns
    -------
    DataFrame
        ``frame``'s columns, ``prediction``, then the positive and the negative class's probability.
    """
    negative, positive = inputs.classes
    probability = vector_to_array(F.col("probability"))
    return model.transform(frame).select(
        *[frame[c] for c in frame.columns],
        F.col(PREDICTED_CLASS).alias("prediction"),
        probability[1].alias(inputs.probability_column(positive)),
        probability[0].alias(inputs.probability_column(negative)),
    )


@dataclass(frozen=True)
class Record:
    """One input record by position (1 = first); ``error`` is set when it could not even be parsed."""

    row: int
    values: Any
    error: str | None = None


def read_records(source: str) -> list[Record]:
    """Read one JSON object, a JSON array, JSON lines or CSV from a file, or stdin for ``-``.

    The format comes from the extension (``.csv``; ``.json``/``.jsonl``/``.ndjson``), else from the
    first character (``{`` or ``[`` means JSON). A JSON line that does not parse becomes a record
    with an error; the others are kept. CSV values are read as text, never guessed.

    Raises
    ------
    SeglakeError
        The file is missing, not UTF-8 text, empty, or not parseable as a whole.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SeglakeError(f"--input: cannot read {source}: {err}") from None
    if not text.strip():
        raise SeglakeError(f"--input: {source} holds no records")
    suffix = "" if source == "-" else Path(source).suffix.lower()
    is_json = suffix in (".json", ".jsonl", ".ndjson") or (
        suffix != ".csv" and text.lstrip()[:1] in ("{", "[")
    )
    records = _json_records(text, source) if is_json else _csv_records(text, source)
    if not records:
        raise SeglakeError(f"--input: {source} holds no records")
    return records


def _json_records(text: str, source: str) -> list[Record]:
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # not one JSON document: try JSON lines
    else:
        if isinstance(whole, dict):
            return [Record(1, whole)]
        if isinstance(whole, list):
            return [Record(i, value) for i, value in enumerate(whole, start=1)]
        raise SeglakeError(f"--input: {source} holds a JSON {type(whole).__name__}, not records")
    records = []
    for line in (line for line in text.splitlines() if line.strip()):
        try:
            records.append(Record(len(records) + 1, json.loads(line)))
        except json.JSONDecodeError as err:
            records.append(Record(len(records) + 1, None, f"not valid JSON: {err.msg} at column {err.colno}"))
    if all(r.error for r in records):
        raise SeglakeError(f"--input: {source} is neither JSON nor JSON lines ({records[0].error})")
    return records


def _csv_records(text: str, source: str) -> list[Record]:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SeglakeError(f"--input: {source} is not readable CSV: {first_line(err)}") from None
    return [Record(i, values) for i, values in enumerate(frame.to_dict("records"), start=1)]


def _show(value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return shown if isinstance(value, str) else f"{type(value).__name__} {shown}"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> float | None:
    # bool is an int in Python, but `true` as a view count is a type error, not 1.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def check_record(values: Any, inputs: ModelInputs) -> tuple[dict[str, Any] | None, str | None]:
    """Check one record against the model's inputs.

    Plain Python, so that each problem names its field and value (a Spark cast would give a null).

    Parameters
    ----------
    values : Any
        A parsed record; anything but a mapping is an error.
    inputs : ModelInputs

    Returns
    -------
    (dict or None, str or None)
        The model's fields with numbers as floats and no error, or ``None`` and every problem
        (``missing field 'x'``, ``field 'x': expected a number, got 'abc'``, ...) joined by ``; ``.

    >>> inputs = ModelInputs("text", ("status",), ("views",), "id", ("opinion", "claim"))
    >>> check_record({"id": 7, "text": "i think so", "status": "verified", "views": "12"}, inputs)
    ({'text': 'i think so', 'status': 'verified', 'views': 12.0}, None)
    >>> check_record({"text": " ", "status": 5, "views": -1}, inputs)
    (None, "missing field 'text'; field 'status': expected text, got int 5; field 'views': must not be negative, got int -1")
    """
    if not isinstance(values, dict):
        return None, f"record is not an object (got {type(values).__name__})"
    clean: dict[str, Any] = {}
    problems: list[str] = []
    for field in inputs.fields:
        value = values.get(field)
        if _blank(value):
            problems.append(f"missing field '{field}'")
        elif field not in inputs.numeric:
            if isinstance(value, str):
                clean[field] = value
            else:
                problems.append(f"field '{field}': expected text, got {_show(value)}")
        else:
            number = _number(value)
            if number is None:
                problems.append(f"field '{field}': expected a number, got {_show(value)}")
            elif number < 0:
                problems.append(f"field '{field}': must not be negative, got {_show(value)}")
            else:
                clean[field] = number
    return (None, "; ".join(problems)) if problems else (clean, None)


def classify_records(
    spark: SparkSession, model: PipelineModel, inputs: ModelInputs, records: list[Record]
) -> list[dict[str, Any]]:
    """Check every record, score the valid ones in one batch, and return one output row per record.

    Returns
    -------
    list of dict
        In input order: ``row``, the id field (when any record has it), ``prediction``,
        ``probability_<positive>``, ``probability_<negative>`` and ``error`` (None when scored).
    """
    negative, positive = inputs.classes
    columns = [inputs.probability_column(positive), inputs.probability_column(negative)]
    with_id = inputs.id is not None and any(
        isinstance(r.values, dict) and inputs.id in r.values for r in records)
    outputs: dict[int, dict[str, Any]] = {}
    valid: list[dict[str, Any]] = []
    for record in records:
        clean, error = (None, record.error) if record.error else check_record(record.values, inputs)
        out: dict[str, Any] = {ROW: record.row}
        if with_id:
            out[inputs.id] = record.values.get(inputs.id) if isinstance(record.values, dict) else None
        out.update({"prediction": None, columns[0]: None, columns[1]: None, "error": error})
        outputs[record.row] = out
        if clean is not None:
            valid.append({ROW: record.row, **clean})
    if valid:
        # pandas + Arrow builds the frame in one step; the column order follows the schema.
        batch = pd.DataFrame(valid)[[f.name for f in inputs.spark_schema().fields]]
        frame = spark.createDataFrame(batch, schema=inputs.spark_schema())
        for scored in predict(model, frame, inputs).select(ROW, "prediction", *columns).collect():
            outputs[scored[ROW]].update(
                {"prediction": scored["prediction"], columns[0]: round(scored[columns[0]], 6),
                 columns[1]: round(scored[columns[1]], 6)}
            )
    return [outputs[r.row] for r in records]


def write_predictions(rows: list[dict[str, Any]], output: str | None, fmt: str | None) -> str:
    """Write output rows as CSV or JSON lines to a file, or stdout when ``output`` is None or ``-``.

    Returns
    -------
    str
        The format used: ``fmt``, else ``csv`` for a ``.csv`` output, else ``jsonl``.
    """
    to_stdout = output in (None, "-")
    fmt = fmt or ("csv" if not to_stdout and str(output).lower().endswith(".csv") else "jsonl")
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        buffer.writelines(json.dumps(row) + "\n" for row in rows)
    if to_stdout:
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
    else:
        try:
            Path(output).write_text(buffer.getvalue(), encoding="utf-8")
        except OSError as err:
            raise SeglakeError(f"--output: cannot write {output}: {err}") from None
    return fmt
