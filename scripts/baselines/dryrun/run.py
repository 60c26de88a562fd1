"""A dry run of the interleaved baseline scripts on a machine without a GPU or torch (numpy only): a numpy
stand-in for the parts of torch they use (./torch) and for the kernels' C entry points (below), so that their
logic (cases, checks, rounds, tables, refusals) runs before a device call spends time on it. Timings are
made up. From scripts/baselines:

  python3 dryrun/run.py grouped_mm_interleaved.py --lib x --configs=0,5 --rounds 3 --reps 2 \
      --only "E64 N2048 K768 (qwen3 down) bal M=32"
  python3 dryrun/run.py attention_interleaved.py --lib x --modes=-1,7 --case 256:4/2:64 --case 384:4/4:192/128
"""
import ctypes, sys, runpy, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import torch

class Fn:
    def __init__(self, f): self.f = f; self.argtypes = None; self.restype = None
    def __call__(self, *a): return self.f(*a)

# DRYRUN_WRONG=1: our stand-ins write a wrong result (the scripts' checks must catch it).
WRONG = os.environ.get("DRYRUN_WRONG") == "1"


def grouped(a, w, out, offs, R, S, E, N, K, config, band, swiglu, stream):
    torch._clock[0] += 0.9 + 0.2 * np.random.rand()
    A, W, O, off = (torch._reg[x].a for x in (a, w, out, offs))
    for s in range(S):
        O[off[s]:off[s + 1]] = A[off[s]:off[s + 1]] @ W[s % E].T
    if WRONG:
        O[0] += 1.0
    return 0

def attn(out, q, k, v, tiles, nTiles, T, nq, nkv, hd, hdv, scale, mode, hg, stream):
    torch._clock[0] += 0.9 + 0.2 * np.random.rand()
    Q, Kt, Vt, O, tl = (torch._reg[x].a for x in (q, k, v, out, tiles))
    assert tl.shape == (nTiles, 4), tl.shape
    rep = nq // nkv
    Kr = np.repeat(Kt, rep, axis=1); Vr = np.repeat(Vt, rep, axis=1)
    s = np.einsum("qhd,khd->hqk", Q, Kr) * scale
    S = Q.shape[0]
    s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    O[...] = np.einsum("hqk,khd->qhd", p, Vr)
    if WRONG:
        O[-1] *= -1.0
    return 0

class Lib:
    epsGroupedGemmSm90 = Fn(grouped)
    epsGroupedGemmSm90Supported = Fn(lambda d: 1)
    epsAttentionSm90 = Fn(attn)
    epsAttentionSm90Supported = Fn(lambda d: 1)

ctypes.CDLL = lambda path: Lib()
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
