"""Benchmark MiniLM embeddings of the TikTok claim transcripts: Spark ``mapInPandas`` vs one process.

Usage: python bench/bench_text.py [--texts 15267] [--master local[2]]

Run with the project's Python first on PATH (Spark's Python workers start ``python3``).

Prints a markdown row for BENCHMARKS.md, all in the same process:

- baseline: the seed's way, ``SentenceTransformer.encode`` on every text in the driver process
  (torch's own threads);
- seglake: the text stage's embedding step (``embed_texts``: cleaning, ``mapInPandas`` with the
  model loaded once per Python worker, one torch thread per task) into Spark's no-op sink;
- tfidf_svd: the light embedder (TF-IDF + SVD, 100 dimensions) on the same texts, for scale.
"""

from __future__ import annotations

import os
import time
from datetime import date

from _common import ROOT, noop, parser, session
from seglake.core.config import TextClustersConfig, TextsSource
from seglake.usecases.text.clusters import embed_texts, embed_tfidf_svd, load_minilm, prepare_texts, read_texts

CLAIMS = ROOT.parent / "shared" / "data" / "tiktok_claims.csv"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--texts", type=int, default=15_267)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    spark = session("bench-text", args.master, progress=True)
    source = TextsSource(path=str(CLAIMS), id="video_id", text="video_transcription_text",
                         group="claim_status")
    texts = prepare_texts(read_texts(spark, source), source).limit(args.texts).cache()
    rows = texts.count()
    corpus = [r["text"] for r in texts.select("text").collect()]

    model = load_minilm()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # the baseline uses every core in one process
    started, cpu = time.perf_counter(), time.process_time()
    model.encode(corpus, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    baseline, baseline_cpu = time.perf_counter() - started, time.process_time() - cpu

    started = time.perf_counter()
    noop(embed_texts(texts, TextClustersConfig()))
    seglake = time.perf_counter() - started

    started = time.perf_counter()
    embed_tfidf_svd(corpus, 100, 0)
    light = time.perf_counter() - started
    load = os.getloadavg()[0]
    print("| date | texts | baseline encode (1 process) | seglake mapInPandas | ratio | tfidf_svd | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| {date.today()} | {rows:,} | {baseline:.1f} s ({rows / baseline:.0f}/s, "
          f"{baseline_cpu:.0f} CPU-s) | {seglake:.1f} s ({rows / seglake:.0f}/s) | "
          f"{baseline / seglake:.2f}× | {light:.1f} s | {load:.0f} |")
    spark.stop()


if __name__ == "__main__":
    main()
