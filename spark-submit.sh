#!/usr/bin/env bash
# Package seglake and submit a job to Spark, passing every other spark-submit argument through.
#
#   ./spark-submit.sh --master local[2] jobs/run.py --config conf/tiktok_users.yaml --run-id r1
#   ./spark-submit.sh --master spark://host:7077 --executor-memory 4g jobs/run.py --config ...
#
# Adds: --py-files seglake.zip (the library, zipped afresh for each submit), --jars with the cached
# Delta jars, the Delta SQL extension and catalog, and the project's venv Python for driver and
# executors (override with PYSPARK_PYTHON for a cluster whose nodes have their own environment).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${SEGLAKE_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || { echo "spark-submit.sh: $python not found: run 'make setup' first" >&2; exit 2; }
[ "$#" -gt 0 ] || { echo "usage: spark-submit.sh [spark-submit options] jobs/<job>.py [job args]" >&2; exit 2; }

# A private zip per submit, removed when spark-submit returns: a driver imports from its zip lazily,
# so a shared zip rewritten by a second submit under a running job breaks that job's imports.
zip_dir="$(mktemp -d "${TMPDIR:-/tmp}/seglake-submit.XXXXXX")"
trap 'rm -rf "$zip_dir"' EXIT
(cd "$here/lib" && "$python" -m zipfile -c "$zip_dir/seglake.zip" seglake >/dev/null)
jars="$("$python" -c 'from seglake.core.jars import delta_jars; print(",".join(map(str, delta_jars())))')"
submit="${SPARK_SUBMIT:-$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')}"

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$python}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${SEGLAKE_CACHE:-$HOME/.cache/seglake}/numba}"
"$submit" \
  --jars "$jars" \
  --py-files "$zip_dir/seglake.zip" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf "spark.driver.extraJavaOptions=-Dlog4j.configurationFile=file:$here/lib/seglake/core/log4j2.properties" \
  --conf "spark.executorEnv.NUMBA_CACHE_DIR=$NUMBA_CACHE_DIR" \
  "$@"
