#!/usr/bin/env python3
"""Time Krum on the Python paths that byzagg replaces, side by side with byzagg.

For each case (n workers, dimension d) the script generates an n x d float32
matrix in memory and times Krum from it (scores over the n - f - 2 nearest
neighbours, f = (n - 3) // 2, then a copy of the selected gradient, as
byzagg returns one) in up to three ways:

  numpy-gram    D = |x_i|^2 + |x_j|^2 - 2 X X^T in float32 (BLAS sgemm). Fast,
                but it cancels catastrophically when the gradients share a
                large common component (try --offset 1000).
  scipy-cdist   scipy.spatial.distance.cdist(X, X, "sqeuclidean") in float64,
                the path of Python robust-learning libraries. Accurate, slow,
                single-threaded. The float32 -> float64 copy is made before
                timing starts.
  byzagg-*      `byzagg bench --json` run as a subprocess on the same (n, d)
                in the same run (--byzagg PATH), so that the ratios come from
                one run on one machine state. byzagg generates its own
                gradients with the same recipe; Krum's cost does not depend
                on the values. It runs with --fresh-output, so that like
                numpy it writes every result into newly allocated memory.

Install the Python side with:  pip install numpy scipy threadpoolctl
Build byzagg with:             cargo build --release

Example (the cases of docs/BENCHMARKS.md):
  python3 benches/peers.py --byzagg target/release/byzagg --json peers.json

OpenBLAS: some machines set OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE to work
around old OpenBLAS bugs, which slows a current numpy. Unless
--keep-openblas-env is given, the script restarts itself once without both
variables, and it prints the BLAS kernel that threadpoolctl reports.
"""

import argparse
import json
import os
import subprocess
import sys
import time

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def restart_without_openblas_overrides():
    """Re-execute this script without the OpenBLAS overrides, before numpy
    loads OpenBLAS (which reads them only at load time)."""
    present = [name for name in OPENBLAS_VARIABLES if name in os.environ]
    if not present:
        return
    print(f"peers.py: restarting without {', '.join(present)} so that numpy picks its own kernel",
          file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARIABLES}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="32x4194304,64x1048576,8x16777216",
                        help="comma-separated NxD cases (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per tool and case; the median is reported (default: %(default)s)")
    parser.add_argument("--scipy-repeats", type=int, default=1,
                        help="timed runs of the slow scipy path (default: %(default)s)")
    parser.add_argument("--tools", default="numpy-gram,scipy-cdist",
                        help="comma-separated Python tools to time (default: %(default)s)")
    parser.add_argument("--offset", type=float, default=0.0,
                        help="constant added to every coordinate, to show the Gram form's error (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--byzagg", metavar="PATH",
                        help="byzagg binary to run side by side, e.g. target/release/byzagg")
    parser.add_argument("--byzagg-backends", default="memory,cpu",
                        help="--backends passed to byzagg bench (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write all rows as JSON to FILE ('-' for stdout)")
    parser.add_argument("--svg", metavar="FILE",
                        help="also plot median seconds against d for each tool (log-log) as SVG")
    parser.add_argument("--keep-openblas-env", action="store_true",
                        help="keep OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE as they are")
    args = parser.parse_args()
    cases = []
    for case in args.cases.split(","):
        try:
            n, d = (int(part) for part in case.lower().split("x"))
        except ValueError:
            parser.error(f"invalid case {case!r}: write NxD, for example 32x4194304")
        if n < 3 or d < 1:
            parser.error(f"invalid case {case!r}: Krum needs n >= 3 and d >= 1")
        cases.append((n, d))
    args.cases = cases
    args.tools = [tool for tool in args.tools.split(",") if tool]
    unknown = set(args.tools) - {"numpy-gram", "scipy-cdist"}
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}: choose from numpy-gram, scipy-cdist")
    if args.repeats < 1 or args.scipy_repeats < 1:
        parser.error("--repeats and --scipy-repeats must be at least 1")
    return args


def krum_scores(np, distances, f):
    """Return the sum of the n - f - 2 smallest off-diagonal distances of each row."""
    n = distances.shape[0]
    off_diagonal = distances[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    k = n - f - 2
    nearest = np.partition(off_diagonal, k - 1, axis=1)[:, :k]
    return nearest.sum(axis=1)


def numpy_gram_krum(np, x, f):
    """Return Krum's selected index, its gradient (copied, as byzagg returns an
    owned vector) and the distances, in the float32 Gram form."""
    gram = x @ x.T
    norms = np.diag(gram)
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    selected = int(np.argmin(krum_scores(np, distances, f)))
    return selected, x[selected].copy(), distances


def scipy_cdist_krum(np, cdist, x64, f):
    """Return the same as numpy_gram_krum from scipy's float64 cdist."""
    distances = cdist(x64, x64, "sqeuclidean")
    selected = int(np.argmin(krum_scores(np, distances, f)))
    return selected, x64[selected].astype(np.float32), distances


def median_time(run, repeats, warmup):
    for _ in range(warmup):
        run()
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    times.sort()
    middle = len(times) // 2
    median = times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2
    return median, result


def run_byzagg(path, n, d, backends, repeats, seed):
    command = [path, "bench", "--n", str(n), "--d", str(d), "--rule", "krum",
               "--backends", backends, "--repeats", str(repeats), "--seed", str(seed),
               "--fresh-output", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"peers.py: {' '.join(command)} failed:\n{completed.stderr}")
    return json.loads(completed.stdout)


def main():
    args = parse_args()
    if not args.keep_openblas_env:
        restart_without_openblas_overrides()
    try:
        import numpy as np
        from scipy.spatial.distance import cdist
        from threadpoolctl import threadpool_info
    except ImportError as error:
        raise SystemExit(f"peers.py: {error}; install the peers with: pip install numpy scipy threadpoolctl")

    blas = [(info.get("internal_api"), info.get("architecture"), info.get("num_threads"))
            for info in threadpool_info() if info.get("user_api") == "blas"]
    print(f"numpy {np.__version__}, BLAS (api, kernel, threads): {blas}; "
          f"{', '.join(f'{v}={os.environ.get(v)}' for v in OPENBLAS_VARIABLES)}")

    rows = []
    rng = np.random.default_rng(args.seed)
    for n, d in args.cases:
        f = (n - 3) // 2
        x = rng.standard_normal((n, d), dtype=np.float32)
        x[:f] += 4.0
        if args.offset:
            x += np.float32(args.offset)
        nbytes = x.nbytes
        case_rows = []
        reference = None
        if "scipy-cdist" in args.tools:
            x64 = x.astype(np.float64)
            seconds, (selected, _, reference) = median_time(
                lambda: scipy_cdist_krum(np, cdist, x64, f), args.scipy_repeats, 0)
            del x64
            case_rows.append({"tool": "scipy-cdist", "seconds": seconds, "selected": selected,
                              "max_rel_error": 0.0})
        if "numpy-gram" in args.tools:
            seconds, (selected, _, distances) = median_time(lambda: numpy_gram_krum(np, x, f), args.repeats, 1)
            error = None
            if reference is not None:
                off = ~np.eye(n, dtype=bool)
                error = float(np.max(np.abs(distances[off] - reference[off]) / reference[off]))
            case_rows.append({"tool": "numpy-gram", "seconds": seconds, "selected": selected,
                              "max_rel_error": error})
        del x
        if args.byzagg:
            report = run_byzagg(args.byzagg, n, d, args.byzagg_backends, args.repeats, args.seed)
            for row in report["rows"]:
                tool = f"byzagg-{row['backend']}"
                if row["backend"] == "gpu" and row["adapter"]:
                    # Name the adapter, so that a software one such as
                    # lavapipe's llvmpipe is not read as a GPU.
                    tool += f" ({row['adapter'].split()[0]})"
                case_rows.append({"tool": tool, "seconds": row["median_s"],
                                  "adapter": row["adapter"], "unavailable": row["unavailable"],
                                  "selected": (row["selected"] or [None])[0],
                                  "max_rel_error": None})
        for row in case_rows:
            row.update(n=n, d=d, f=f, offset=args.offset, bytes=nbytes)
        rows.extend(case_rows)
        print_case(n, d, f, case_rows)

    if args.svg:
        with open(args.svg, "w") as out:
            out.write(plot_svg(rows))
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as out:
                out.write(text + "\n")


def print_case(n, d, f, rows):
    def seconds_of(tool):
        return next((r["seconds"] for r in rows if r["tool"] == tool and r["seconds"]), None)

    scipy_s, numpy_s, stream_s = seconds_of("scipy-cdist"), seconds_of("numpy-gram"), seconds_of("byzagg-memory")
    print(f"\nKrum, n = {n}, d = {d}, f = {f}, {rows[0]['bytes'] / 1e6:.0f} MB of float32 gradients")
    width = max(18, *(len(row["tool"]) for row in rows))
    print(f"{'tool':<{width}} {'median s':>10} {'GB/s':>8} {'vs scipy':>9} {'vs numpy':>9} {'stream':>7} {'max rel err':>12}")
    for row in rows:
        if row.get("unavailable"):
            print(f"{row['tool']:<{width}} unavailable: {row['unavailable']}")
            continue
        s = row["seconds"]

        def ratio(base):
            return f"{base / s:.1f}x" if base and s else "-"

        err = row.get("max_rel_error")
        print(f"{row['tool']:<{width}} {s:>10.4f} {row['bytes'] / s / 1e9:>8.2f} {ratio(scipy_s):>9} {ratio(numpy_s):>9} "
              f"{(f'{stream_s / s * 100:.0f}%' if stream_s and row['tool'] != 'byzagg-memory' else '-'):>7} "
              f"{(f'{err:.1e}' if err is not None else '-'):>12}")


def plot_svg(rows, width=640, height=400):
    """Draw median seconds against d, log-log, one line per tool, as SVG text."""
    import math

    series = {}
    for row in rows:
        if row.get("seconds"):
            series.setdefault(row["tool"], []).append((row["d"], row["seconds"]))
    points = [p for line in series.values() for p in line]
    if not points:
        return "<svg xmlns='http://www.w3.org/2000/svg'/>\n"
    left, right, top, bottom = 70, 190, 20, 50
    lx = [math.log10(d) for d, _ in points]
    ly = [math.log10(s) for _, s in points]
    x0, x1 = math.floor(min(lx)), math.ceil(max(lx))
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    x1 = max(x1, x0 + 1)
    y1 = max(y1, y0 + 1)

    def sx(d):
        return left + (math.log10(d) - x0) / (x1 - x0) * (width - left - right)

    def sy(s):
        return height - bottom - (math.log10(s) - y0) / (y1 - y0) * (height - top - bottom)

    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
    n_values = sorted({row["n"] for row in rows})
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-family='sans-serif' font-size='12'>",
           f"<rect width='{width}' height='{height}' fill='white'/>"]
    for e in range(x0, x1 + 1):
        x = sx(10 ** e)
        out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{height - bottom}' stroke='#ddd'/>")
        out.append(f"<text x='{x:.1f}' y='{height - bottom + 16}' text-anchor='middle'>1e{e}</text>")
    for e in range(y0, y1 + 1):
        y = sy(10 ** e)
        out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{width - right}' y2='{y:.1f}' stroke='#ddd'/>")
        out.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end'>1e{e} s</text>")
    out.append(f"<text x='{(left + width - right) / 2:.0f}' y='{height - 12}' text-anchor='middle'>"
               f"d (coordinates per worker), n = {', '.join(map(str, n_values))}</text>")
    out.append(f"<text x='14' y='{(top + height - bottom) / 2:.0f}' text-anchor='middle' "
               f"transform='rotate(-90 14 {(top + height - bottom) / 2:.0f})'>median seconds per Krum</text>")
    for k, (tool, line) in enumerate(sorted(series.items())):
        color = colors[k % len(colors)]
        line.sort()
        path = " ".join(f"{sx(d):.1f},{sy(s):.1f}" for d, s in line)
        out.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        for d, s in line:
            out.append(f"<circle cx='{sx(d):.1f}' cy='{sy(s):.1f}' r='3' fill='{color}'/>")
        y = top + 10 + 18 * k
        out.append(f"<line x1='{width - right + 12}' y1='{y}' x2='{width - right + 32}' y2='{y}' "
                   f"stroke='{color}' stroke-width='2'/>")
        out.append(f"<text x='{width - right + 38}' y='{y + 4}'>{tool}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
