#!/usr/bin/env python3
"""Checks the accuracy contract at a large d: squared distances from a
backend against the f64 reference, on gradients with a large common offset.

Usage: benches/accuracy.py [--n 5] [--d 100000000] [--backend gpu] [--offset 1000] [--spread 1e-3] [--dir DIR]

Writes an (n, d) float32 .npy (n·d·4 bytes) into DIR, runs
`byzagg distances` with the backend and with `--backend reference` (which
needs n·d·8 bytes of memory), and prints the worst relative error against
the accuracy contract's tolerance of 1e-4. Needs numpy (`pip install numpy`) and a release
build (`cargo build --release`).
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--d", type=int, default=100_000_000)
    parser.add_argument("--backend", default="gpu")
    parser.add_argument("--offset", type=float, default=1000.0, help="common component of every coordinate")
    parser.add_argument("--spread", type=float, default=1e-3, help="standard deviation around the offset")
    parser.add_argument("--dir", type=pathlib.Path, default=None)
    parser.add_argument("--binary", default="target/release/byzagg")
    args = parser.parse_args()

    directory = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="byzagg-accuracy-"))
    grads = directory / "grads.npy"
    rng = np.random.default_rng(0)
    # By default every coordinate is near 1000 and workers differ by about
    # 1e-3, where the Gram form would cancel catastrophically. There the f32
    # differences are multiples of 2^-14, so their squares are exact; use
    # --offset 0 --spread 1 for data whose squares round.
    matrix = np.lib.format.open_memmap(grads, mode="w+", dtype=np.float32, shape=(args.n, args.d))
    chunk = 1 << 22
    for start in range(0, args.d, chunk):
        end = min(start + chunk, args.d)
        matrix[:, start:end] = args.offset + rng.normal(0.0, args.spread, size=(args.n, end - start))
    matrix.flush()
    del matrix

    results = {}
    for backend in (args.backend, "reference"):
        out = directory / f"d2-{backend}.npy"
        started = time.perf_counter()
        subprocess.run(
            [args.binary, "distances", "--backend", backend, "--input", str(grads), "--output", str(out)],
            check=True,
        )
        print(f"{backend}: {time.perf_counter() - started:.1f} s", flush=True)
        results[backend] = np.load(out)

    computed, exact = results[args.backend], results["reference"]
    off_diagonal = ~np.eye(args.n, dtype=bool)
    relative = np.abs(computed - exact)[off_diagonal] / np.abs(exact)[off_diagonal]
    worst = float(relative.max())
    print(f"n = {args.n}, d = {args.d}: worst relative error of {args.backend} = {worst:.2e} (tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
