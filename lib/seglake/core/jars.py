"""The Delta Lake jars: fetched once from Maven Central into a local cache, then used offline.

Spark's own ``spark.jars.packages`` resolves through Ivy on every start and needs the network the
first time in every fresh Ivy home; fetching the two jars ourselves (checked against Maven's SHA-1
files) gives a cache that tests, jobs and ``spark-submit --jars`` all share, offline.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from seglake.core.errors import SeglakeError

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
DELTA_VERSION = "4.0.1"
# (group, artifact, version): delta-spark for Spark 4.0 / Scala 2.13 and its one runtime dependency
# that Spark does not ship (antlr4-runtime 4.13.1 is already in pyspark's jars).
DELTA_ARTIFACTS = (
    ("io.delta", "delta-spark_2.13", DELTA_VERSION),
    ("io.delta", "delta-storage", DELTA_VERSION),
)


def cache_dir() -> Path:
    """Folder holding the jars: ``$SEGLAKE_CACHE/jars``, by default ``~/.cache/seglake/jars``."""
    root = os.environ.get("SEGLAKE_CACHE") or Path.home() / ".cache" / "seglake"
    return Path(root) / "jars"


def _jar_name(artifact: str, version: str) -> str:
    return f"{artifact}-{version}.jar"


def _url(group: str, artifact: str, version: str) -> str:
    return f"{MAVEN_CENTRAL}/{group.replace('.', '/')}/{artifact}/{version}/{_jar_name(artifact, version)}"


def delta_jars(download: bool = False) -> list[Path]:
    """Paths of the Delta jars in the cache.

    Parameters
    ----------
    download : bool
        Fetch missing jars from Maven Central (verifying SHA-1). When False, a missing jar is an
        error that says how to fetch it.

    Returns
    -------
    list of Path
        One path per artifact in ``DELTA_ARTIFACTS``.
    """
    folder = cache_dir()
    paths = []
    for group, artifact, version in DELTA_ARTIFACTS:
        path = folder / _jar_name(artifact, version)
        if not path.exists():
            if not download:
                raise SeglakeError(
                    f"Delta jar {path.name} is not in {folder}: run `make setup` "
                    "(or `seglake setup`) once with access to Maven Central"
                )
            _fetch(_url(group, artifact, version), path)
        paths.append(path)
    return paths


def _fetch(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            body = response.read()
        with urllib.request.urlopen(url + ".sha1", timeout=60) as response:
            expected = response.read().decode().split()[0].strip()
    except OSError as err:
        raise SeglakeError(f"could not fetch {url}: {err}") from err
    actual = hashlib.sha1(body).hexdigest()
    if actual != expected:
        raise SeglakeError(f"checksum mismatch for {url}: got {actual}, Maven says {expected}")
    partial = path.with_suffix(".part")
    partial.write_bytes(body)
    partial.replace(path)  # atomic: a killed download never leaves a truncated jar behind
