"""Reading a config file: environment expansion, ``--set`` overrides, relative paths, one-line errors.

Relative paths in a config (``lakehouse``, ``events.path``, ``entities.path``, ``texts.path``, the four
``ratings`` files) are resolved against the folder of the config file, so a config means the same
thing from any working directory. ``${VAR}`` and ``${VAR:-default}`` in string values are expanded
from the environment first.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from seglake.core.config.base import RUN_ID
from seglake.core.config.usecase import SeglakeConfig
from seglake.core.errors import SeglakeError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _resolve(path: str, base: Path) -> str:
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", path):  # a URI (s3a://, dbfs:/, file:/) stays as is
        return path
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved).resolve())


def _apply_override(raw: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise SeglakeError(f"--set '{assignment}': expected dotted.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SeglakeError(f"--set '{assignment}': '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def _describe(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif item["type"] == "missing":
            problems.append(f"missing key '{key}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"key '{key}': {message} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(problems)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SeglakeConfig:
    """Read and validate a config file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : list of str
        ``dotted.key=value`` assignments applied before validation (values parsed as YAML).

    Returns
    -------
    SeglakeConfig

    Raises
    ------
    SeglakeError
        One message naming the file and every key at fault.
    """
    file = Path(path)
    if not file.is_file():
        raise SeglakeError(f"config file not found: {file}")
    text = file.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SeglakeError(f"{file}: not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise SeglakeError(f"{file}: the top level must be a mapping of keys")
    for assignment in overrides:
        _apply_override(raw, assignment)
    raw = _expand_env(raw)
    base = file.resolve().parent
    if isinstance(raw.get("lakehouse"), str):
        raw["lakehouse"] = _resolve(raw["lakehouse"], base)
    for section in ("events", "entities", "texts"):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get("path"), str):
            raw[section]["path"] = _resolve(raw[section]["path"], base)
    if isinstance(raw.get("ratings"), dict):
        for key in ("ratings", "users", "items", "genres"):
            if isinstance(raw["ratings"].get(key), str):
                raw["ratings"][key] = _resolve(raw["ratings"][key], base)
    raw["config_hash"] = hashlib.sha256(yaml.safe_dump(raw, sort_keys=True).encode()).hexdigest()[:16]
    raw["source_file"] = str(file)
    try:
        return SeglakeConfig.model_validate(raw)
    except ValidationError as err:
        raise SeglakeError(_describe(err, str(file))) from None


def check_run_id(run_id: str) -> str:
    """Run ids become partition values and table predicates: keep them to a safe alphabet."""
    if not RUN_ID.match(run_id):
        raise SeglakeError(
            f"run id '{run_id}' must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return run_id


def require_columns(available: list[str], names: list[str], key: str, where: str) -> None:
    """Fail with one line if a column named in config is not in the data's real schema.

    Every column name that reaches Spark from config passes here first, so config cannot inject
    expressions: only names that exist verbatim in the schema are ever used.
    """
    missing = [n for n in names if n not in available]
    if missing:
        raise SeglakeError(
            f"{key}: column(s) {', '.join(repr(m) for m in missing)} not found in {where} "
            f"(it has: {', '.join(available)})"
        )
