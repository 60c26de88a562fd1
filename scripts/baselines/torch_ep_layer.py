#!/usr/bin/env python3
"""The baseline eps-moe is measured against: one expert-parallel MoE layer as a PyTorch user would
write it without eps-moe.

One process per GPU (torchrun, or mp.spawn when started with plain python). Each rank holds
experts/world experts (contiguous ranges) and tokens_per_rank tokens. One layer is:

  router (x @ Wr^T, softmax in fp32, top-k, renormalised)
  -> permute the (token, slot) pairs by expert (stable sort)
  -> all_to_all_single of the per-expert counts, one host sync (.tolist()) for the split sizes
  -> all_to_all_single dispatch of the rows (per-rank split sizes)
  -> regroup the received rows by local expert, expert FFN (SwiGLU) by torch._grouped_mm with
     offs = cumsum of rows per expert (groups padded to 8 rows, as torchtitan does), or by a loop of
     per-expert matmuls; the faster of the two is reported (--ffn picks one)
  -> all_to_all_single combine back, un-permute, weighted sum of the k slots
  (+ a shared expert on the local tokens when --shared > 0)

Timing: CUDA events around the whole layer after a barrier, median over --reps after --warmup; the
layer time reported is the slowest rank's median. Prints one JSON object on stdout (rank 0).

  torchrun --nproc-per-node 2 scripts/baselines/torch_ep_layer.py \\
      --hidden 4096 --inter 14336 --experts 8 --topk 2 --tokens-per-rank 8192
  python3 scripts/baselines/torch_ep_layer.py --world 2 ...     # same, via mp.spawn
  python3 scripts/baselines/torch_ep_layer.py --cpu --world 2   # gloo on CPU, fp32, the given sizes
  python3 scripts/baselines/torch_ep_layer.py --dry-run         # gloo on CPU, tiny sizes, --check

--check compares every rank's layer output with a reference computed on that rank from all
experts' weights (each expert's weights come from its own seed, so any rank can remake them).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

GROUP_ALIGN = 8  # rows per expert group for torch._grouped_mm (16-byte aligned bf16 groups)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=4096, help="hidden size H")
    p.add_argument("--inter", type=int, default=14336, help="intermediate size I of one routed expert")
    p.add_argument("--experts", type=int, default=8, help="routed experts E (a multiple of the world size)")
    p.add_argument("--topk", type=int, default=2, help="experts per token k")
    p.add_argument("--shared", type=int, default=0, help="intermediate size of a shared expert (0: none)")
    p.add_argument("--tokens-per-rank", type=int, default=8192)
    p.add_argument("--skew", type=float, default=0.0,
                   help="load skew: router logits get -skew*ln(e+1), a Zipf-like popularity (0: balanced)")
    p.add_argument("--ffn", choices=["auto", "grouped_mm", "loop"], default="auto",
                   help="expert FFN implementation; auto times both and reports the faster")
    p.add_argument("--dtype", choices=["bf16", "f32"], default=None, help="default bf16 on GPU, f32 on CPU")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", type=int, default=None,
                   help="processes to spawn when not under torchrun (default: GPUs visible, or 2 with --cpu)")
    p.add_argument("--cpu", action="store_true", help="gloo on CPU instead of NCCL on GPUs")
    p.add_argument("--dry-run", action="store_true",
                   help="--cpu with tiny sizes (H=64 I=128 E=8 k=2 64 tokens/rank, 2 reps) and --check")
    p.add_argument("--check", action="store_true", help="compare the output with a per-rank dense reference")
    args = p.parse_args(argv)
    if args.dry_run:
        args.cpu = True
        args.check = True
        args.hidden, args.inter, args.experts, args.topk = 64, 128, 8, 2
        args.tokens_per_rank = 64
        args.warmup, args.reps = 1, 2
        if args.shared:
            args.shared = 96
    if args.dtype is None:
        args.dtype = "f32" if args.cpu else "bf16"
    return args


# ---------------------------------------------------------------------------------------- weights

def expert_weights(e, H, I, seed, dtype, device):
    """Expert e's (w13 [2I, H] gate rows then up rows, w2 [H, I]) from its own seed."""
    g = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + 1000 + e)
    w13 = torch.randn(2 * I, H, generator=g) / math.sqrt(H)
    w2 = torch.randn(H, I, generator=g) / math.sqrt(I)
    return w13.to(device=device, dtype=dtype), w2.to(device=device, dtype=dtype)


def dense_weights(tag, rows, cols, seed, dtype, device, scale=None):
    g = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + tag)
    w = torch.randn(rows, cols, generator=g) * (scale if scale is not None else 1 / math.sqrt(cols))
    return w.to(device=device, dtype=dtype)


class Layer:
    """This rank's share of one MoE layer."""

    def __init__(self, args, rank, world, device, dtype):
        self.args, self.rank, self.world, self.device, self.dtype = args, rank, world, device, dtype
        H, I, E = args.hidden, args.inter, args.experts
        self.E_local = E // world
        self.first = rank * self.E_local
        pairs = [expert_weights(self.first + i, H, I, args.seed, dtype, device) for i in range(self.E_local)]
        self.w13 = torch.stack([p[0] for p in pairs])  # [E_local, 2I, H]
        self.w2 = torch.stack([p[1] for p in pairs])  # [E_local, H, I]
        self.router = dense_weights(1, E, H, args.seed, dtype, device)  # [E, H]
        self.router_bias = (-args.skew * torch.log(torch.arange(1, E + 1, dtype=torch.float32))).to(device)
        self.shared = None
        if args.shared:
            self.shared = (dense_weights(2, 2 * args.shared, H, args.seed, dtype, device),
                           dense_weights(3, H, args.shared, args.seed, dtype, device))
        self.last_loads = []

    # -- pieces ------------------------------------------------------------------------------

    def route(self, x):
        logits = (x @ self.router.t()).float() + self.router_bias
        probs = torch.softmax(logits, dim=-1)
        w, idx = torch.topk(probs, self.args.topk, dim=-1)
        return idx, w / w.sum(dim=-1, keepdim=True)

    def ffn(self, x, rows_per_expert, kind):
        """SwiGLU of each local expert over its contiguous rows of x (rows_per_expert: host ints)."""
        if kind == "grouped_mm":
            offs = torch.tensor(rows_per_expert, device=x.device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
            gate_up = torch._grouped_mm(x, self.w13.transpose(-2, -1), offs=offs)
            I = self.args.inter
            h = F.silu(gate_up[:, :I]) * gate_up[:, I:]
            return torch._grouped_mm(h, self.w2.transpose(-2, -1), offs=offs)
        out = torch.empty(x.shape[0], self.args.hidden, device=x.device, dtype=x.dtype)
        start = 0
        for e, n in enumerate(rows_per_expert):
            if n:
                gate_up = x[start:start + n] @ self.w13[e].t()
                I = self.args.inter
                out[start:start + n] = (F.silu(gate_up[:, :I]) * gate_up[:, I:]) @ self.w2[e].t()
            start += n
        return out

    def shared_mlp(self, x):
        w13, w2 = self.shared
        gate_up = x @ w13.t()
        S = self.args.shared
        return (F.silu(gate_up[:, :S]) * gate_up[:, S:]) @ w2.t()

    # -- the layer ---------------------------------------------------------------------------

    def forward(self, x, kind):
        T, H = x.shape
        k, E, W, EL = self.args.topk, self.args.experts, self.world, self.E_local
        idx, weights = self.route(x)

        # Permute (token, slot) pairs by expert; experts of a rank are contiguous, so are its rows.
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        x_perm = x[order // k]
        counts = torch.bincount(flat, minlength=E).to(torch.int64)

        # Counts to the owners of the experts, then the one host sync that sizes the all-to-alls.
        recv_counts = torch.empty(W * EL, dtype=torch.int64, device=x.device)
        dist.all_to_all_single(recv_counts, counts)
        counts_host = counts.view(W, EL).sum(1).tolist()  # rows this rank sends to each rank
        recv_host = recv_counts.tolist()  # [source rank][local expert]
        recv_per_rank = [sum(recv_host[r * EL:(r + 1) * EL]) for r in range(W)]

        recv_x = x.new_empty(sum(recv_per_rank), H)
        dist.all_to_all_single(recv_x, x_perm, output_split_sizes=recv_per_rank, input_split_sizes=counts_host)

        # Regroup rank-major segments by local expert; pad each group for grouped_mm.
        seg_expert = torch.arange(EL, device=x.device).repeat(W)
        eids = torch.repeat_interleave(seg_expert, recv_counts)
        regroup = torch.argsort(eids, stable=True)
        rows = [sum(recv_host[r * EL + e] for r in range(W)) for e in range(EL)]
        self.last_loads = rows
        if kind == "grouped_mm":  # whole groups of GROUP_ALIGN rows, none empty (as torchtitan pads)
            padded = [max(GROUP_ALIGN, -(-n // GROUP_ALIGN) * GROUP_ALIGN) for n in rows]
        else:
            padded = rows
        n = len(regroup)
        starts = [0] * EL
        pstarts = [0] * EL
        for e in range(1, EL):
            starts[e] = starts[e - 1] + rows[e - 1]
            pstarts[e] = pstarts[e - 1] + padded[e - 1]
        e_sorted = eids[regroup]
        dest = (torch.tensor(pstarts, device=x.device)[e_sorted] + torch.arange(n, device=x.device)
                - torch.tensor(starts, device=x.device)[e_sorted])
        x_grp = x.new_zeros(sum(padded), H)
        x_grp[dest] = recv_x[regroup]

        y_grp = self.ffn(x_grp, padded, kind)

        y_recv = torch.empty_like(recv_x)
        y_recv[regroup] = y_grp[dest]
        y_back = x.new_empty(T * k, H)
        dist.all_to_all_single(y_back, y_recv, output_split_sizes=counts_host, input_split_sizes=recv_per_rank)

        y_slots = torch.empty_like(y_back)
        y_slots[order] = y_back
        out = (y_slots.view(T, k, H).float() * weights.unsqueeze(-1)).sum(1).to(x.dtype)
        if self.shared is not None:
            out = out + self.shared_mlp(x)
        return out

    def reference(self, x):
        """The same layer computed locally from every expert's weights (no communication)."""
        idx, weights = self.route(x)
        out = torch.zeros(x.shape[0], self.args.hidden, dtype=torch.float32, device=x.device)
        I = self.args.inter
        for e in range(self.args.experts):
            tok, slot = torch.nonzero(idx == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            w13, w2 = expert_weights(e, self.args.hidden, I, self.args.seed, self.dtype, self.device)
            gate_up = x[tok] @ w13.t()
            y = (F.silu(gate_up[:, :I]) * gate_up[:, I:]) @ w2.t()
            out.index_add_(0, tok, y.float() * weights[tok, slot].unsqueeze(-1))
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared_mlp(x)
        return out


# ---------------------------------------------------------------------------------------- timing

def time_layer(layer, x, kind, args, on_gpu):
    samples = []
    for i in range(args.warmup + args.reps):
        dist.barrier()
        if on_gpu:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            layer.forward(x, kind)
            b.record()
            torch.cuda.synchronize()
            ms = a.elapsed_time(b)
        else:
            t0 = time.perf_counter()
            layer.forward(x, kind)
            ms = (time.perf_counter() - t0) * 1e3
        if i >= args.warmup:
            samples.append(ms)
    return statistics.median(samples)


def max_over_ranks(value, device):
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def run(rank, world, local_rank, args):
    on_gpu = not args.cpu
    if on_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if on_gpu else "gloo", rank=rank, world_size=world,
                            **({"device_id": device} if on_gpu else {}))
    try:
        if args.experts % world:
            raise SystemExit(f"--experts {args.experts} is not a multiple of the world size {world}")
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        layer = Layer(args, rank, world, device, dtype)
        g = torch.Generator(device="cpu").manual_seed(args.seed * 1_000_003 + 7 + rank)
        x = torch.randn(args.tokens_per_rank, args.hidden, generator=g).to(device=device, dtype=dtype)

        kinds = ["grouped_mm", "loop"] if args.ffn == "auto" else [args.ffn]
        timings, errors = {}, {}
        for kind in kinds:
            try:
                local = time_layer(layer, x, kind, args, on_gpu)
                timings[kind] = max_over_ranks(local, device)
            except (RuntimeError, NotImplementedError) as e:  # e.g. no _grouped_mm kernel for this device/dtype
                if args.ffn != "auto":
                    raise
                errors[kind] = str(e).split("\n")[0]
                dist.barrier()
        if not timings:
            raise SystemExit(f"no FFN implementation ran: {errors}")
        best = min(timings, key=timings.get)

        check = None
        if args.check:
            got = layer.forward(x, best).float()
            ref = layer.reference(x).float()
            rel = ((got - ref).norm() / ref.norm()).item()
            check = {"rel_l2": max_over_ranks(rel, device), "bound": 1e-2 if dtype == torch.bfloat16 else 1e-5}

        loads = torch.tensor(layer.last_loads, dtype=torch.float64, device=device)
        all_loads = [torch.empty_like(loads) for _ in range(world)]
        dist.all_gather(all_loads, loads)
        loads = torch.cat(all_loads).tolist()

        H, I, k = args.hidden, args.inter, args.topk
        expert_flops = 2 * 3 * H * I * k * args.tokens_per_rank * world  # all ranks' routed expert FLOPs
        if rank == 0:
            result = {
                "layer_ms": timings[best],
                "ffn": best,
                "layer_ms_by_ffn": timings,
                "ffn_errors": errors,
                "expert_tflops_per_gpu": expert_flops / world / (timings[best] * 1e-3) / 1e12,
                "rows_per_expert": {"min": min(loads), "max": max(loads), "mean": statistics.fmean(loads)},
                "world": world,
                "backend": "nccl" if on_gpu else "gloo",
                "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
                "dtype": args.dtype,
                "hidden": H, "inter": I, "experts": args.experts, "topk": k, "shared": args.shared,
                "tokens_per_rank": args.tokens_per_rank, "skew": args.skew,
                "warmup": args.warmup, "reps": args.reps,
                "torch": torch.__version__,
                "check": check,
            }
            print(json.dumps(result), flush=True)
        if check is not None and not check["rel_l2"] <= check["bound"]:
            raise SystemExit(f"check failed: relative L2 error {check['rel_l2']:.3e} > {check['bound']}")
    finally:
        dist.destroy_process_group()


def spawned(index, world, args, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(index))
    run(index, world, index, args)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    args = parse_args(argv)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:  # torchrun
        run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), args)
        return
    world = args.world or (2 if args.cpu else torch.cuda.device_count())
    if world < 1:
        raise SystemExit("no GPU visible: pass --cpu (gloo) or run on a GPU host")
    import torch.multiprocessing as mp
    mp.spawn(spawned, args=(world, args, free_port()), nprocs=world, join=True)


if __name__ == "__main__":
    sys.exit(main())
