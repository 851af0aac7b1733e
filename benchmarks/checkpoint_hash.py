"""Cost of the checkpoint manifest's checksum, in seconds per GB, against the alternatives the standard library has.

``python benchmarks/checkpoint_hash.py [--mib 1024] [--quick]`` prints one JSON line: for each hash, seconds per GB (1e9
bytes) over an in-memory buffer (the hash alone), and ``manifest_s_per_gb``: writing and verifying a manifest of a
folder of that size (files read back from the page cache, as right after a checkpoint write; one process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

from gspo.distributed import DistContext
from gspo.trainer.manifest import verify, write_manifest

HASHES = {
    "crc32": lambda data: zlib.crc32(data),
    "adler32": lambda data: zlib.adler32(data),
    "blake2b": lambda data: hashlib.blake2b(data, digest_size=16).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "md5": lambda data: hashlib.md5(data).digest(),
}


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024, help="bytes hashed, in MiB")
    parser.add_argument("--quick", action="store_true", help="8 MiB: a smoke run (tests/benchmarks)")
    args = parser.parse_args()
    if args.quick:
        args.mib = 8
    data = os.urandom(args.mib << 20)
    gb = len(data) / 1e9
    result = {f"{name}_s_per_gb": round(_best_of(lambda f=fn: f(data)) / gb, 3) for name, fn in HASHES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        chunk = len(data) // 4  # a few files, as a checkpoint has (shards, model, optimizer)
        for i in range(4):
            (folder / f"part_{i}.bin").write_bytes(data[i * chunk:(i + 1) * chunk])
        single = DistContext()
        result["manifest_write_s_per_gb"] = round(_best_of(lambda: write_manifest(folder, single), 2) / gb, 3)
        result["manifest_verify_s_per_gb"] = round(_best_of(lambda: verify(folder, single), 2) / gb, 3)
    result.update({"mib": args.mib, "quick": args.quick, "cpu_count": os.cpu_count()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
