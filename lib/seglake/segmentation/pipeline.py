"""The segmentation stages as data: the function behind each and the tables it reads and writes.

Strings only: importing this module imports no stage (UMAP, SHAP, ...). Table names as in
:mod:`seglake.core.pipeline` (``models/<x>`` is ``models/<run_id>/<x>``).
"""

from __future__ import annotations

from seglake.core.pipeline import Stage

RUN_MODEL = ("models/manifest.json", "models/transform", "models/kmeans")

INGEST = Stage("ingest", "seglake.segmentation.ingest:ingest",
               writes=("bronze/events", "bronze/quarantine", "bronze/ingest_log"))
FEATURES_FROM_EVENTS = Stage("features", "seglake.segmentation.features:build_entities",
                             reads=("bronze/events",), writes=("silver/entities",))
FEATURES_FROM_TABLE = Stage("features", "seglake.segmentation.features:build_entities",
                            writes=("silver/entities", "silver/rejected"))
SWEEP = Stage("sweep", "seglake.segmentation.sweep:sweep", reads=("silver/entities",),
              writes=("gold/sweep", "gold/runs", *RUN_MODEL))
DENSITY = Stage("density", "seglake.segmentation.density:density", reads=("silver/entities",),
                writes=("gold/clusters", "gold/cluster_quality", "gold/cluster_stability",
                        "gold/density_sweep", "models/manifest-density.json"),
                optional=RUN_MODEL)  # density.group_by: segment clusters within the sweep's segments
SEGMENT = Stage("segment", "seglake.segmentation.segment:segment", reads=RUN_MODEL,
                writes=("gold/segments", "gold/profiles", "gold/runs", "gold/segment_stability"),
                optional=("gold/clusters", "models/manifest-density.json"))
EXPLAIN = Stage("explain", "seglake.segmentation.explain:explain",
                reads=("silver/entities", "gold/clusters|gold/segments"),
                writes=("gold/explanations", "gold/descriptions", "models/manifest-explain.json"))
REPORT = Stage("report", "seglake.report:build_report", reads=("gold/sweep",),
               optional=("gold/segments", "gold/profiles", "gold/clusters", "gold/cluster_quality",
                         "gold/cluster_stability", "gold/density_sweep", "gold/segment_stability",
                         "gold/explanations", "gold/descriptions", "bronze/ingest_log",
                         "bronze/quarantine"))

EVENTS = (INGEST, FEATURES_FROM_EVENTS, SWEEP, DENSITY, SEGMENT, EXPLAIN, REPORT)
ENTITIES = (FEATURES_FROM_TABLE, SWEEP, DENSITY, SEGMENT, EXPLAIN, REPORT)
