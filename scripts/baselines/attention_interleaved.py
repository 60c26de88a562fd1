#!/usr/bin/env python3
"""The sm_90a attention kernel against torch SDPA (cuDNN and flash backends) in ONE process, on the same
tensors, timed in alternation (issue 13, acceptance 2).

  python3 scripts/baselines/attention_interleaved.py --lib libattn.so [--rounds 5] [--reps 10] [--modes=-1]
      [--case 16384:32/8:128 ...]

--lib:   native/cuda/bench/attention_capi.cu built as a shared library (scripts/kernels/attention_sm90.sh
         vs-torch does it). --modes: our variants to time, each MODE[:HEADGROUP] (the schedule, -1 = the
         default per head dim; the grid's head group, 0 or absent = the default: attention_sm90.h); the first
         is what the engine runs.
--case:  SEQ:NQ/NKV:HD[/HDV], one causal sequence (repeatable); default: issue 13's table (1K..32K at 32/8 x
         128, 4K/8K at 64/8 x 64, MLA 192/128 with 16 and 128 heads at 4K..16K).
Why one process: on a power-capped GPU the clocks drift with the load, so numbers from two processes run one
after the other (the harness, then sdpa_attention.py) carry that drift into their ratio. Each round times
every side once (median of --reps after 3 warm-ups, CUDA events), the order rotating by round; the table
gives the median over rounds of each side, and of the per-round ratio with its lowest and highest round.
Layout as the engine packs it: q [T, NQ, HD], k [T, NKV, HD], v [T, NKV, HDV] bf16, random normal; SDPA gets
[1, H, S, D] views (no copy), is_causal, scale 1/sqrt(HD), enable_gqa (kv heads repeated outside the timing
where a backend refuses it). Our output is checked against the cuDNN backend's first: rel L2 <= 1e-2.
TFLOP/s by FlashAttention's count: 2 * S^2/2 * (HD + HDV) * NQ.
"""
import argparse
import ctypes
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import ratio_rounds, time_rounds
from sdpa_refusal import refusal

DEFAULT_CASES = ["1024:32/8:128", "4096:32/8:128", "8192:32/8:128", "16384:32/8:128", "32768:32/8:128",
                 "4096:64/8:64", "8192:64/8:64", "4096:16/16:192/128", "8192:16/16:192/128",
                 "4096:128/128:192/128", "8192:128/128:192/128", "16384:128/128:192/128"]
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
TILE_ROWS = 128  # kAttentionTileRows


def parse_case(spec):
    s, heads, dims = spec.split(":")
    nq, nkv = (int(x) for x in heads.split("/"))
    d = [int(x) for x in dims.split("/")]
    return int(s), nq, nkv, d[0], d[-1]


def sdpa_call(backend, q, k, v, nq, nkv, scale):
    """A no-argument call of SDPA under `backend` on [1, H, S, D] views and a note (kv heads repeated where the
    backend refuses enable_gqa), or (None, the reason torch gave) when it refuses the case."""
    views = [x.unsqueeze(0).transpose(1, 2) for x in (q, k, v)]

    def call_of(args, gqa):
        def call():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(*args, is_causal=True, scale=scale, enable_gqa=gqa)
        return call

    call = call_of(views, nq != nkv)
    why = refusal(torch, backend, [call])
    if why is None:
        return call, None
    if nq == nkv:
        return None, why
    # The repeated kv heads are made only when enable_gqa was refused.
    call = call_of([views[0]] + [x.repeat_interleave(nq // nkv, dim=1) for x in views[1:]], False)
    why = refusal(torch, backend, [call])
    return (call, f"kv heads repeated to {nq}") if why is None else (None, why)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lib", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--modes", default="-1")
    p.add_argument("--case", action="append")
    args = p.parse_args()
    # (schedule, head group) per variant; 0 = the kernel's default head group
    modes = [tuple(int(x) for x in (m.split(":") + ["0"])[:2]) for m in args.modes.split(",")]
    lib = ctypes.CDLL(args.lib)
    lib.epsAttentionSm90.restype = ctypes.c_int
    lib.epsAttentionSm90.argtypes = ([ctypes.c_void_p] * 5 + [ctypes.c_int, ctypes.c_longlong] + [ctypes.c_int] * 4 +
                                     [ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_void_p])
    if not lib.epsAttentionSm90Supported(0):
        sys.exit("the sm_90a attention kernel does not run on this GPU")
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}; "
          f"rounds {args.rounds}, reps {args.reps}", flush=True)
    ours_names = [f"ours{m}" + (f":{g}" if g else "") for m, g in modes]
    rows, failures = [], 0
    for spec in args.case or DEFAULT_CASES:
        S, nq, nkv, hd, hdv = parse_case(spec)
        gen = torch.Generator(device=dev).manual_seed(S + nq)
        q = torch.randn(S, nq, hd, device=dev, dtype=torch.bfloat16, generator=gen)
        k = torch.randn(S, nkv, hd, device=dev, dtype=torch.bfloat16, generator=gen)
        v = torch.randn(S, nkv, hdv, device=dev, dtype=torch.bfloat16, generator=gen)
        out = torch.empty(S, nq, hdv, device=dev, dtype=torch.bfloat16)
        # One sequence: 128-row tiles, longest rows first (attention.cu's order).
        q0s = sorted(range(0, S, TILE_ROWS), reverse=True)
        tiles = torch.tensor([[0, S, q0, 0] for q0 in q0s], device=dev, dtype=torch.int32)
        scale = 1 / math.sqrt(hd)

        def ours(mode, group):
            err = lib.epsAttentionSm90(out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), tiles.data_ptr(),
                                       len(q0s), S, nq, nkv, hd, hdv, scale, mode, group,
                                       ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
            if err != 0:
                raise RuntimeError(f"attention_sm90 launch error {err}")

        runs = {n: (lambda m=m: ours(*m)) for n, m in zip(ours_names, modes)}
        notes = []
        for b, backend in BACKENDS.items():
            call, why = sdpa_call(backend, q, k, v, nq, nkv, scale)
            if call is None:
                notes.append(f"{b}: - ({why})")
            else:
                runs[b] = call
                if why:
                    notes.append(f"{b}: {why}")
        ref_name = "cudnn" if "cudnn" in runs else ("flash" if "flash" in runs else None)
        if ref_name:
            ref = runs[ref_name]()[0].transpose(0, 1).float()
            for n, m in zip(ours_names, modes):
                out.fill_(float("nan"))
                ours(*m)
                rel = ((out.float() - ref).norm() / ref.norm()).item()
                if not rel <= 1e-2:
                    print(f"FAIL {spec} {n}: rel L2 {rel:.3e} against {ref_name}")
                    failures += 1
            del ref
        flops = 2 * (S * S / 2) * (hd + hdv) * nq
        tf = {n: [flops / ms / 1e9 for ms in v] for n, v in time_rounds(torch, runs, args.rounds, args.reps).items()}
        med = {n: statistics.median(v) for n, v in tf.items()}
        ratio = {(o, b): ratio_rounds(tf[o], tf[b]) for o in ours_names for b in BACKENDS if b in tf}
        rows.append((spec, med, ratio, notes))
        print(f"ROW {spec}: " + " ".join(f"{n} {x:.1f}" for n, x in med.items()) +
              "".join(f" | {o}/{b} {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]" for (o, b), r in ratio.items()) +
              ("  (" + "; ".join(notes) + ")" if notes else ""), flush=True)
        del q, k, v, out, tiles, runs
        torch.cuda.empty_cache()

    cols = ours_names + list(BACKENDS)
    pairs = [(o, b) for o in ours_names for b in BACKENDS]
    print(f"\ncase (TFLOP/s, median of {args.rounds} rounds)".ljust(30) + "".join(f"{c:>9}" for c in cols) +
          "".join(f"  {o + '/' + b + ' [low, high]':>26}" for o, b in pairs))
    for spec, med, ratio, notes in rows:
        cells = "".join((f"{med[c]:9.1f}" if c in med else f"{'-':>9}") for c in cols)
        rs = "".join((f"  {ratio[q][0]:8.3f} [{ratio[q][1]:.3f}, {ratio[q][2]:.3f}]" if q in ratio else f"  {'-':>26}")
                     for q in pairs)
        print(f"{spec:<30}{cells}{rs}")
    for spec, _, _, notes in rows:
        for n in notes:
            print(f"note {spec}: {n}")
    if failures:
        print(f"FAILED: {failures} check(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
