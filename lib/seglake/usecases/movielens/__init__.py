"""MovieLens: ratings ingest with quarantine, ALS embeddings, taste tables and a segment assigner."""
