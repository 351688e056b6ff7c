"""Benchmark: sample 1,000,000 personas of the general adult spec (names included).

Prints personas/s (pool building counted separately, since it happens once per process and
locale) and peak memory from resource.getrusage (ru_maxrss, KiB on Linux). Target: 1M personas
in under 10 s on one core and under 2 GiB. Run: .venv/bin/python bench/personas.py [N]
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# one core, as the target says: keep BLAS/Arrow from spreading out
os.environ.setdefault("OMP_NUM_THREADS", "1")
import pyarrow as pa  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

from crowdlab.personas import load_spec, sample, write_personas  # noqa: E402
from crowdlab.personas.sampling.identity import locale_pools  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "data" / "populations" / "general_adult.yaml"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    spec = load_spec(SPEC)
    t0 = time.perf_counter()
    locale_pools("en_US")
    pools_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = sample(spec, n, seed=1)
    sample_s = time.perf_counter() - t1
    with tempfile.TemporaryDirectory() as tmp:
        t2 = time.perf_counter()
        write_personas(table, Path(tmp) / "personas.parquet", spec=spec, seed=1)
        write_s = time.perf_counter() - t2
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    total = pools_s + sample_s
    print(f"spec            {spec.name} ({len(spec.attributes)} attributes, names/city/email/description)")
    print(f"personas        {n:,}")
    print(f"name pools      {pools_s:.2f} s (once per process)")
    print(f"sampling        {sample_s:.2f} s  -> {n / sample_s:,.0f} personas/s")
    print(f"incl. pools     {total:.2f} s  -> {n / total:,.0f} personas/s (target: 1M in < 10 s)")
    print(f"parquet write   {write_s:.2f} s")
    print(f"peak RSS        {peak_gib:.2f} GiB (target < 2 GiB)")


if __name__ == "__main__":
    main()
