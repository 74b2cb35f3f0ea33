"""Throughput of divtune prepare's own work, and the gap sampler against the reference's.

Prints, from one run:
1. responses per second for vote compression + gap pairs + deviation weights
   (two embedders) on N synthetic responses (default 1,000,000). The embedder is
   trivial (a hash-seeded vector per text) so only divtune's work is timed. Pools
   are generated chunk by chunk and discarded, so the texts are never all in memory,
   let alone twice.
2. the time of one 1,000-response pool with ``gap_pairs`` against a straightforward
   transcription of the reference's O(n^3) sampler (``reference_gap_pairs``), as a ratio.

    python benchmarks/bench_prepare.py [--responses 1000000] [--pool-size 1000]
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np

from divtune.deviation import deviation_weights
from divtune.embedders import Embedder
from divtune.pairs import compress_votes, gap_pairs, pool_rng, reference_gap_pairs


class TrivialEmbedder(Embedder):
    """A fixed pseudo-random unit vector per text (seeded by its CRC32): no model cost."""

    def __init__(self, name: str, dim: int = 16):
        super().__init__(cache_dir=None)
        self.name, self.dim = name, dim

    def _embed_batch(self, texts, batch_size, show_progress):
        seeds = np.fromiter((zlib.crc32(t.encode()) for t in texts), dtype=np.uint64, count=len(texts))
        # One vectorised draw per batch: rows are a deterministic function of the seeds.
        base = np.random.default_rng(0).standard_normal((997, self.dim))
        return base[seeds % 997] + 0.01 * (seeds % 101)[:, None]


def synthetic_chunks(total: int, chunk: int, rng: np.random.Generator):
    """Yield lists of pools [(texts, scores)] of ~``chunk`` responses until ``total``."""
    made, pool_no = 0, 0
    while made < total:
        pools, in_chunk = [], 0
        while in_chunk < chunk and made < total:
            n = int(min(rng.integers(2, 61), total - made)) or 1
            scores = np.floor(rng.lognormal(1.5, 1.5, n)) + 1
            texts = [f"pool {pool_no} response {i} " + "x" * int(rng.integers(20, 60)) for i in range(n)]
            pools.append((f"pool-{pool_no}", texts, scores))
            made += n
            in_chunk += n
            pool_no += 1
        yield pools


def throughput(total: int, seed: int = 0) -> tuple[float, float, int, int]:
    rng = np.random.default_rng(seed)
    embedders = [TrivialEmbedder("semantic"), TrivialEmbedder("style", dim=8)]
    pairs_made = responses = 0
    elapsed = cpu = 0.0
    for pools in synthetic_chunks(total, 20_000, rng):
        start, cpu_start = time.perf_counter(), time.process_time()
        members = []
        # Vote compression runs once over all scores, as in run_prepare.
        compress_votes(np.concatenate([scores for _, _, scores in pools]), "exact", score_min=1.0, score_max=1e5)
        for pool_id, texts, scores in pools:
            pairs = gap_pairs(scores, 5.0, pool_rng(seed, pool_id))
            used = sorted({i for pair in pairs for i in pair})
            members.append((used, [texts[i] for i in used]))
            pairs_made += len(pairs)
        flat = [t for _, ts in members for t in ts]
        vectors = {e.name: e.embed(flat, show_progress=False) for e in embedders}
        offset = 0
        for used, _ in members:
            if used:
                block = {name: v[offset : offset + len(used)] for name, v in vectors.items()}
                deviation_weights(block)
            offset += len(used)
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        responses += sum(len(t) for _, t, _ in pools)
    return responses / elapsed, responses / cpu, responses, pairs_made


def pool_speedup(pool_size: int, seed: int = 0) -> tuple[float, float]:
    """CPU seconds of each sampler on the same pool (CPU time, so a busy machine does not skew the ratio)."""
    scores = np.floor(np.random.default_rng(seed).lognormal(2.0, 1.5, pool_size)) + 1
    start = time.process_time()
    fast = gap_pairs(scores, 5.0, np.random.default_rng(seed))
    fast_s = time.process_time() - start
    start = time.process_time()
    ref = reference_gap_pairs(scores.tolist(), 5.0, np.random.default_rng(seed))
    ref_s = time.process_time() - start
    # Same kind of result: both are disjoint matchings of (nearly) every response.
    assert abs(len(fast) - len(ref)) <= pool_size // 10
    return fast_s, ref_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=1_000_000)
    parser.add_argument("--pool-size", type=int, default=1000)
    args = parser.parse_args()

    rate, cpu_rate, responses, pairs = throughput(args.responses)
    print(
        f"pairs + weights: {rate:,.0f} responses/s wall clock, {cpu_rate:,.0f} responses per CPU second "
        f"({responses:,} synthetic responses, {pairs:,} pairs)"
    )
    fast_s, ref_s = pool_speedup(args.pool_size)
    print(
        f"{args.pool_size}-response pool (CPU time): gap_pairs {fast_s * 1000:.1f} ms, reference O(n^3) sampler "
        f"{ref_s:.2f} s -> {ref_s / fast_s:,.0f}x faster"
    )


if __name__ == "__main__":
    main()
