#!/usr/bin/env python3
"""torch._grouped_mm (CUTLASS sm90 grouped kernels inside PyTorch) on the loads that
native/cuda/bench/grouped_gemm_check.cu timed, in the same device call (issue 12).

  python3 scripts/baselines/grouped_mm.py --loads loads.txt [--ours ggc.log] [--reps 20]

--loads: lines "tag|E N K c_0 ... c_{S-1}" (segment s uses expert s % E), written by the harness's --loads.
--ours:  the harness's output; its "VARIANTS ..." and "RESULT tag | tf... | rel | pct" lines are merged
         into one table with the torch figure and the ratio (best of our variants / torch).
Times out = torch._grouped_mm(a[R,K], w[E,N,K].transpose(-2,-1), offs=cumsum(counts)) on random bf16
data: CUDA events around each call, median of --reps after 3 warm-ups; TFLOP/s = 2*R*N*K/t. Also
prints the torch.matmul 8192^3 bf16 figure of the same run.
"""
import argparse
import sys

import torch

from cuda_timing import time_ms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--loads", required=True)
    p.add_argument("--ours")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")

    n = 8192
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ms = time_ms(torch, lambda: x @ y, args.reps)
    print(f"CEILING torch.matmul bf16 8192^3: {2 * n**3 / ms / 1e9:.1f} TFLOP/s")
    del x, y

    torch_tf = {}
    with open(args.loads) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            tag, nums = line.split("|")
            v = [int(t) for t in nums.split()]
            E, N, K, counts = v[0], v[1], v[2], v[3:]
            if len(counts) != E:  # grouped_mm takes one group per expert
                print(f"TORCH {tag}: skipped (S != E)")
                continue
            R = sum(counts)
            a = torch.randn(R, K, device=dev, dtype=torch.bfloat16)
            w = torch.randn(E, N, K, device=dev, dtype=torch.bfloat16) * K**-0.5
            offs = torch.tensor(counts, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)
            wt = w.transpose(-2, -1)
            try:
                ms = time_ms(torch, lambda: torch._grouped_mm(a, wt, offs=offs), args.reps)
                tf = 2.0 * R * N * K / ms / 1e9
            except Exception as e:  # noqa: BLE001
                print(f"TORCH {tag}: error {type(e).__name__}: {str(e)[:200]}")
                tf = float("nan")
            torch_tf[tag] = tf
            print(f"TORCH {tag}: {tf:.1f} TFLOP/s")
            del a, w, wt, offs
            torch.cuda.empty_cache()

    if args.ours:
        ceiling = None
        names = []
        rows = []
        with open(args.ours) as f:
            for line in f:
                if line.startswith("CEILING cublasGemmEx"):
                    ceiling = float(line.split(":")[1].split()[0])
                if line.startswith("VARIANTS "):
                    names = line.split()[1:]
                if not line.startswith("RESULT "):
                    continue
                tag, tfs, _rel, _pct = [x.strip() for x in line[len("RESULT "):].split("|")]
                rows.append((tag, [float(x) for x in tfs.split()]))
        print()
        head = f"{'shape / load':44s} " + " ".join(f"{n:>11s}" for n in names) + f" {'torch':>7s} {'best/torch':>10s}"
        if ceiling:
            head += f" {'best%cuBLAS':>11s}"
        print(head)
        for tag, tfs in rows:
            best = max(tfs)
            tt = torch_tf.get(tag, float("nan"))
            line = f"{tag:44s} " + " ".join(f"{x:11.1f}" for x in tfs) + f" {tt:7.1f} {best / tt:9.2f}x"
            if ceiling:
                line += f" {100 * best / ceiling:10.1f}%"
            print(line)
        if ceiling:
            print(f"cuBLAS 8192^3 ceiling of this run: {ceiling:.1f} TFLOP/s")


if __name__ == "__main__":
    sys.exit(main())
