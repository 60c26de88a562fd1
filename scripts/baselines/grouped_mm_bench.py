#!/usr/bin/env python3
"""torch._grouped_mm (CUTLASS sm90 grouped kernels inside PyTorch) on the rows of `eps-moe bench experts`,
in the same device call, beside our three expert_matmul kernels (issue 12, item 4).

  python3 scripts/baselines/grouped_mm_bench.py --ours bench.json [--reps 20] [--json torch.json]
  python3 scripts/baselines/grouped_mm_bench.py --ours bench.json --from torch.json   # the table again, no GPU

--ours: `eps-moe bench experts --json` output: each suites.experts row gives the shape (E, N, K), the rows of
        each expert (counts) and our TFLOP/s (grouped, dense, grouped_sm90 where it ran). Rows without counts
        (files from before the field) are rebuilt only when balanced.
Times out = torch._grouped_mm(a[R,K], w[E,N,K].transpose(-2,-1), offs=cumsum(counts)) on random bf16 data (the
bench's dtype must be bf16: grouped_mm is bf16 only): CUDA events around each call, median of --reps after 3
warm-ups; TFLOP/s = 2*R*N*K/t, as the bench counts. Weights rotate over enough copies to exceed the L2 (50 MB)
when one set fits in it, as the bench's InputSets do. Also prints the torch.matmul 8192^3 bf16 figure.
Table: ours (sm90, grouped, dense), torch, sm90/torch and best-of-ours/torch; a last line counts the rows where
sm90 >= 1.0x torch from 128 rows per expert up and >= 0.9x below (issue 12, acceptance 2).
"""
import argparse
import json
import sys

from cuda_timing import time_ms


def bench_rows(path):
    doc = json.load(open(path))
    rows = doc.get("suites", {}).get("experts") or []
    out = []
    for r in rows:
        counts = r.get("counts")
        if counts is None and r.get("load") == "balanced":
            counts = [r["rowsPerExpert"]] * r["E"]
        out.append(dict(r, counts=counts))
    return doc, out


def key(r):
    return f"{r['shape']}|{r['load']}|{r['rowsPerExpert']}"


def run_torch(rows, reps):
    import torch

    dev = torch.device("cuda")
    info = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    n = 8192
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    info["matmul8192"] = 2 * n**3 / time_ms(torch, lambda: x @ y, reps) / 1e9
    del x, y
    res = {}
    for r in rows:
        k = key(r)
        if r["counts"] is None:
            res[k] = None
            continue
        E, N, K, counts = r["E"], r["N"], r["K"], r["counts"]
        R = sum(counts)
        if R == 0:
            res[k] = None
            continue
        wbytes = E * N * K * 2
        sets = max(1, min(8, -(-100 * 2**20 // (wbytes + R * K * 2))))  # > 2x the L2 in all
        a = [torch.randn(R, K, device=dev, dtype=torch.bfloat16) for _ in range(sets)]
        w = [torch.randn(E, N, K, device=dev, dtype=torch.bfloat16).mul_(K**-0.5).transpose(-2, -1) for _ in range(sets)]
        offs = torch.tensor(counts, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        it = [0]

        def call():
            i = it[0] % sets
            it[0] += 1
            return torch._grouped_mm(a[i], w[i], offs=offs)

        try:
            res[k] = 2.0 * R * N * K / time_ms(torch, call, reps) / 1e9
        except Exception as e:  # noqa: BLE001
            print(f"TORCH {k}: error {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            res[k] = None
        print(f"TORCH {k}: {res[k]}", file=sys.stderr, flush=True)
        del a, w, offs
        torch.cuda.empty_cache()
    return info, res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ours", required=True)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", help="write torch's figures here")
    p.add_argument("--from", dest="from_", help="torch's figures from an earlier --json (no GPU)")
    args = p.parse_args()
    doc, rows = bench_rows(args.ours)
    if doc.get("dtype", "bf16") != "bf16":
        print(f"bench dtype {doc.get('dtype')}: torch._grouped_mm takes bf16 only", file=sys.stderr)
        return 1
    if args.from_:
        saved = json.load(open(args.from_))
        info, res = saved["info"], saved["torch"]
    else:
        info, res = run_torch(rows, args.reps)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"info": info, "torch": res}, f, indent=1)
    ceiling = (doc.get("ceiling") or {}).get("tflops")
    print(f"## experts: eps-moe expert_matmul vs torch._grouped_mm ({info['gpu']}, torch {info['torch']})")
    print(f"bench: {doc.get('gpu')} {doc.get('date')}; ceilings of the run: bench {ceiling} TFLOP/s, "
          f"torch.matmul 8192^3 {info['matmul8192']:.1f} TFLOP/s")
    print()
    f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    print("| shape | E N K | load | rows/expert | sm90 | grouped | dense | torch | sm90/torch | best/torch | sm90 %ceil |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    hits = {"ge": [0, 0], "lt": [0, 0]}
    for r in rows:
        t = res.get(key(r))
        sm90, g, d = r.get("sm90Tflops"), r.get("groupedTflops"), r.get("denseTflops")
        best = max(x for x in (sm90, g, d) if x is not None)
        ratio = "-" if t is None or sm90 is None else f"{sm90 / t:.2f}x"
        bratio = "-" if t is None else f"{best / t:.2f}x"
        pct = "-" if sm90 is None or not ceiling else f"{100 * sm90 / ceiling:.1f}%"
        print(f"| {r['shape']} | {r['E']} {r['N']} {r['K']} | {r['load']} | {r['rowsPerExpert']} | {f(sm90)} | {f(g)} | "
              f"{f(d)} | {f(t)} | {ratio} | {bratio} | {pct} |")
        if t is not None and sm90 is not None:
            k = "ge" if r["rowsPerExpert"] >= 128 else "lt"
            hits[k][1] += 1
            hits[k][0] += sm90 / t >= (1.0 if k == "ge" else 0.9)
    print()
    print(f"sm90 >= 1.0x torch at >= 128 rows/expert: {hits['ge'][0]} / {hits['ge'][1]}; "
          f">= 0.9x below: {hits['lt'][0]} / {hits['lt'][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
