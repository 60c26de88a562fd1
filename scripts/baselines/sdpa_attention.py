#!/usr/bin/env python3
"""torch SDPA (torch.nn.functional.scaled_dot_product_attention) on the cases of `eps-moe bench attention`,
in the same device call, beside our numbers (issue 13).

  python3 scripts/baselines/sdpa_attention.py --ours bench.json [--backends flash,cudnn] [--reps 20]
        [--packed per-seq|nested] [--json sdpa.json]
  python3 scripts/baselines/sdpa_attention.py --case 4096:32/8:128 --case 700,2048:128/128:192/128
  python3 scripts/baselines/sdpa_attention.py --from sdpa.json --ours bench.json   # the table again, no torch
  python3 scripts/baselines/sdpa_attention.py --ours quick.json --cpu              # dry run on the CPU

--ours:     `eps-moe bench attention --json` output: its suites.attention rows give the cases (seqLens,
            numHeads, numKvHeads, headDim, headDimV) and our TFLOP/s; the table puts ours beside each backend
            with ours/backend. Rows the bench timed per kernel (byKernel: sm80 and sm90 on Hopper) get a column
            per kernel and the ratios of each. --cases FILE takes the cases from such a file without our column.
--case:     SEQLENS:NQ/NKV:HD[/HDV] (SEQLENS comma-separated: a packed batch), repeatable.
--backends: any of flash (SDPBackend.FLASH_ATTENTION: FlashAttention-2 in torch), cudnn (CUDNN_ATTENTION),
            efficient (EFFICIENT_ATTENTION), math; each runs alone under torch.nn.attention.sdpa_kernel.
            A backend that refuses a case (no kernel: flash likely does at qk 192 != v 128) prints '-' and the
            reason torch gave (its warnings), in the notes under the table.
--packed:   how a packed batch of mixed lengths runs. per-seq (default): one SDPA call per sequence on
            [1, H, S, D] views of the packed [T, H, D] tensors, all calls inside one timed region (what a
            server without a varlen kernel does; launch gaps count, as they do for us). nested: one call
            on a jagged nested tensor (torch.nested, layout=torch.jagged) of the sequences, where the
            backend takes it, else '-' and the reason. A single sequence is one dense call either way.
GQA:        enable_gqa=True (the kernel reads kv head h // (nq/nkv)); where the backend refuses it the k and v
            heads are repeated to nq before timing (outside it) and the note says so.
Layout:     q, k, v as our engine packs them, [T, H, D] (BSHD), viewed as [1, H, S, D] without a copy; bf16
            random normal data (f32 with --cpu); scale 1/sqrt(qk head dim); is_causal=True (S_q == S_k).
Time:       CUDA events around each repetition, median of --reps after --warmup; no L2 rotation (these
            cases are compute-bound). TFLOP/s by FlashAttention's count, as the bench's: per sequence
            2 * S^2/2 * (hd + hdv) * nq (4 * S^2/2 * hd * nq when hd == hdv).
--cpu:      the same code path on the CPU in f32 (backends without a CPU kernel print '-'): checks the script,
            not a measurement.
"""
import argparse
import json
import math
import statistics
import sys
import time

from cuda_timing import time_ms as cuda_time_ms
from sdpa_refusal import refusal, short

BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def case_flops(c):
    return sum(2 * (S * S / 2) * (c["headDim"] + c["headDimV"]) * c["numHeads"] for S in c["seqLens"])


def parse_case(spec):
    """SEQLENS:NQ/NKV:HD[/HDV] -> a case dict like the bench's rows."""
    try:
        lens, heads, dims = spec.split(":")
        nq, nkv = (int(x) for x in heads.split("/"))
        d = [int(x) for x in dims.split("/")]
        seq = [int(x) for x in lens.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--case {spec!r}: expected SEQLENS:NQ/NKV:HD[/HDV], e.g. 4096:32/8:128")
    hd, hdv = d[0], d[-1]
    if len(d) > 2 or nq % nkv or min(seq) < 1:
        raise argparse.ArgumentTypeError(f"--case {spec!r}: nq must be a multiple of nkv, lengths >= 1, at most two dims")
    dims_name = f"{hd}" if hd == hdv else f"{hd}/{hdv}"
    name = f"{len(seq)} x {seq[0]}" if len(set(seq)) == 1 else f"{len(seq)} packed ({min(seq)}..{max(seq)})"
    return {"name": f"{name} {nq}/{nkv} x {dims_name}", "seqLens": seq, "numHeads": nq, "numKvHeads": nkv,
            "headDim": hd, "headDimV": hdv}


def bench_rows(path):
    """The suites.attention rows of an `eps-moe bench --json` file (older rows lack seqLens/headDimV)."""
    rows = json.load(open(path)).get("suites", {}).get("attention") or []
    out = []
    for r in rows:
        seq = r.get("seqLens") or [r["tokens"] // r["sequences"]] * r["sequences"]
        by_kernel = {k: v["tflops"] for k, v in (r.get("byKernel") or {}).items()}
        out.append({"name": r["name"], "seqLens": seq, "numHeads": r["numHeads"], "numKvHeads": r["numKvHeads"],
                    "headDim": r["headDim"], "headDimV": r.get("headDimV", r["headDim"]), "ours": r.get("tflops"),
                    "byKernel": by_kernel})
    return out


def measure(cases, args):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cpu = args.cpu or not torch.cuda.is_available()
    dev = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.bfloat16
    info = {"torch": torch.__version__, "device": "cpu" if cpu else torch.cuda.get_device_name(0),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if not cpu else None,
            "dtype": str(dtype).replace("torch.", ""), "packed": args.packed, "reps": args.reps}
    print(f"torch {info['torch']}, {info['device']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, {info['dtype']}, "
          f"packed batches: {args.packed}", flush=True)

    def time_ms(fn):
        for _ in range(args.warmup):
            fn()
        if cpu:
            ts = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ts)
        return cuda_time_ms(torch, fn, args.reps, warmup=0)  # warmed up above

    def attempt(backend, calls):
        """Runs the calls once under the backend; None when it ran, else the reason torch gave."""
        return refusal(torch, getattr(SDPBackend, BACKENDS[backend]), calls, sync=not cpu)

    results = []
    for c in cases:
        seq, nq, nkv, hd, hdv = c["seqLens"], c["numHeads"], c["numKvHeads"], c["headDim"], c["headDimV"]
        T = sum(seq)
        gen = torch.Generator(device=dev).manual_seed(1234)
        q = torch.randn(T, nq, hd, device=dev, dtype=dtype, generator=gen)
        k = torch.randn(T, nkv, hd, device=dev, dtype=dtype, generator=gen)
        v = torch.randn(T, nkv, hdv, device=dev, dtype=dtype, generator=gen)
        scale = 1 / math.sqrt(hd)
        cu = [0]
        for S in seq:
            cu.append(cu[-1] + S)
        nested = args.packed == "nested" and len(seq) > 1

        def calls_for(kk, vv, gqa):
            if nested:
                def nt(x):
                    return torch.nested.nested_tensor([x[cu[i]:cu[i + 1]] for i in range(len(seq))],
                                                      layout=torch.jagged).transpose(1, 2)
                qn, kn, vn = nt(q), nt(kk), nt(vv)
                return [lambda: F.scaled_dot_product_attention(qn, kn, vn, is_causal=True, scale=scale, enable_gqa=gqa)]
            views = [tuple(x[cu[i]:cu[i + 1]].unsqueeze(0).transpose(1, 2) for x in (q, kk, vv)) for i in range(len(seq))]
            return [lambda a=a: F.scaled_dot_product_attention(*a, is_causal=True, scale=scale, enable_gqa=gqa) for a in views]

        row = dict(c, gflop=case_flops(c) / 1e9, backends={})
        for b in args.backends:
            note = None
            try:
                calls = calls_for(k, v, nq != nkv)
                why = attempt(b, calls)
                if why is not None and nq != nkv:
                    # The backend may take GQA only with the kv heads repeated: retry so (outside the timing).
                    kr, vr = (x.repeat_interleave(nq // nkv, dim=1) for x in (k, v))
                    calls = calls_for(kr, vr, False)
                    if attempt(b, calls) is None:
                        note = f"kv heads repeated to {nq} (enable_gqa refused: {short(why, 120)})"
                        why = None
                if why is not None:
                    row["backends"][b] = {"error": why}
                else:
                    with sdpa_kernel(getattr(SDPBackend, BACKENDS[b])):
                        ms = time_ms(lambda: [f() for f in calls])
                    row["backends"][b] = {"ms": ms, "tflops": case_flops(c) / ms / 1e9, "note": note}
            except Exception as e:  # noqa: BLE001: out of memory and the like end this cell only
                row["backends"][b] = {"error": short(f"{type(e).__name__}: {e}")}
            cell = row["backends"][b]
            print(f"SDPA {c['name']} {b}: " + (f"{cell['tflops']:.1f} TFLOP/s ({cell['ms']:.3f} ms)" if "ms" in cell
                                              else f"- ({cell['error']})"), flush=True)
            calls = None
        results.append(row)
        del q, k, v
        if not cpu:
            torch.cuda.empty_cache()
    return info, results


def num(x, width):
    """TFLOP/s and GFLOP: one decimal from 10 up, three significant digits below (CPU dry runs)."""
    return (f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}").rjust(width)


def our_columns(rows):
    """Our columns: the op as it ran ("eps-moe") and, where the bench forced each kernel, one per kernel
    (sm80, sm90). Ratios to torch are given for the kernel columns when there are any, else for eps-moe."""
    kernels = sorted({k for r in rows for k in (r.get("byKernel") or {})})
    have_ours = any(r.get("ours") is not None for r in rows)
    cols = (["eps-moe"] if have_ours else []) + kernels
    return cols, (kernels or cols)


def our_value(r, col):
    return r.get("ours") if col == "eps-moe" else (r.get("byKernel") or {}).get(col)


def table(info, rows, backends):
    """Our TFLOP/s (per kernel where the bench forced each) beside each backend's, and ours/backend; '-' where a
    number is missing."""
    cols, ratio_cols = our_columns(rows)
    head = [f"{'case':34s}", f"{'tokens':>7s}", f"{'heads q/kv x dim':>18s}", f"{'GFLOP':>9s}"]
    head += [f"{c:>8s}" for c in cols]
    head += [f"{b:>9s}" for b in backends]
    head += [f"{(c if len(ratio_cols) > 1 else '') + '/' + b:>11s}" for c in ratio_cols for b in backends]
    lines = [f"## attention: eps-moe vs torch SDPA ({info.get('device')}, torch {info.get('torch')}, "
             f"cuDNN {info.get('cudnn')}, {info.get('dtype')}; TFLOP/s, ours/backend; packed: {info.get('packed')})",
             " ".join(head)]
    notes = []
    for r in rows:
        dims = f"{r['headDim']}" if r["headDim"] == r["headDimV"] else f"{r['headDim']}/{r['headDimV']}"
        cells = [f"{r['name'][:34]:34s}", f"{sum(r['seqLens']):7d}", f"{str(r['numHeads']) + '/' + str(r['numKvHeads']) + ' x ' + dims:>18s}",
                 num(r["gflop"], 9)]
        for c in cols:
            v = our_value(r, c)
            cells.append(num(v, 8) if v is not None else f"{'-':>8s}")
        tf = {}
        for b in backends:
            cell = r["backends"].get(b, {"error": "not run"})
            if "tflops" in cell:
                tf[b] = cell["tflops"]
                mark = "*" if cell.get("note") else ""
                cells.append(num(cell["tflops"], 9 - len(mark)) + mark)
                if cell.get("note"):
                    notes.append(f"* {r['name']} {b}: {cell['note']}")
            else:
                cells.append(f"{'-':>9s}")
                notes.append(f"- {r['name']} {b}: {cell['error']}")
        for c in ratio_cols:
            v = our_value(r, c)
            cells += [(f"{v / tf[b]:.2f}x" if v is not None and b in tf and tf[b] > 0 else "-").rjust(11) for b in backends]
        lines.append(" ".join(cells))
    lines += notes
    lines.append("TFLOP/s = sum over sequences of 2 * S^2/2 * (hd + hdv) * nq / time (FlashAttention's causal count)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--ours", help="eps-moe bench --json output: the cases and our TFLOP/s")
    ap.add_argument("--cases", help="eps-moe bench --json output: the cases only")
    ap.add_argument("--case", action="append", type=parse_case, default=[], help="SEQLENS:NQ/NKV:HD[/HDV], repeatable")
    ap.add_argument("--only", help="comma-separated case names to keep (of --ours/--cases)")
    ap.add_argument("--backends", default="flash,cudnn", help="comma-separated: flash cudnn efficient math")
    ap.add_argument("--packed", choices=["per-seq", "nested"], default="per-seq")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU in f32 (a dry run of the code path)")
    ap.add_argument("--json", help="also write {info, rows} here")
    ap.add_argument("--from", dest="from_json", help="a --json file of an earlier run: print its table, measure nothing")
    a = ap.parse_args(argv)
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in a.backends:
        if b not in BACKENDS:
            ap.error(f"--backends: unknown backend {b!r} (choose from {', '.join(BACKENDS)})")
    if a.reps < 1 or a.warmup < 0:
        ap.error("--reps must be >= 1 and --warmup >= 0")

    ours = {r["name"]: r for r in bench_rows(a.ours)} if a.ours else {}
    if a.from_json:
        saved = json.load(open(a.from_json))
        rows = saved["rows"]
        for r in rows:
            if r["name"] in ours:
                r["ours"] = ours[r["name"]]["ours"]
                r["byKernel"] = ours[r["name"]]["byKernel"]
        backends = [b for b in a.backends if any(b in r["backends"] for r in rows)] or sorted({b for r in rows for b in r["backends"]})
        print(table(saved["info"], rows, backends))
        return 0

    cases = list(ours.values()) if a.ours else [dict(c, ours=None) for c in bench_rows(a.cases)] if a.cases else []
    if a.only:
        keep = {x.strip() for x in a.only.split(",")}
        cases = [c for c in cases if c["name"] in keep]
    cases += a.case
    if not cases:
        ap.error("no cases: give --ours or --cases (eps-moe bench attention --json FILE) or --case")
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"sdpa_attention.py: torch is not importable here ({e}); --from FILE prints a saved run's table without it",
              file=sys.stderr)
        return 1
    info, rows = measure(cases, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    print()
    print(table(info, rows, a.backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
