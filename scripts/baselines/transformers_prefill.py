#!/usr/bin/env python3
"""What a user would run instead of eps-moe on one GPU: transformers' own forward of the same model
shape (random bf16 weights from config.json), sdpa attention and its grouped_mm experts, on the same
token sequences, keeping the last position's logits (a prefill). Prints one JSON line.

  python3 scripts/baselines/transformers_prefill.py --config DIR [--input seqs.json] [--layers N]
        [--batch 8 --seq 2048] [--warmup 2 --reps 5] [--experts grouped_mm|eager] [--attn sdpa]

--config: a folder with config.json (eps-moe make-model --preset X writes one; so does
          `node -e "..presetConfig.."`); --layers cuts num_hidden_layers (a full-size shape on one GPU).
--input:  {"sequences": [[ids], ...]} as eps-moe prefill --input takes (all of one length), else
          random ids of --batch x --seq. Time: CUDA-synchronised wall time of each step, median of --reps.
"""
import argparse
import json
import statistics
import tempfile
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


# Fields transformers 5 types as float: a JSON writer that prints 1.0 as 1 (JavaScript's) fails its strict
# config validation, so integral values of these are made floats again.
FLOAT_FIELDS = {
    "routed_scaling_factor", "moe_normalize_expert_weights", "clip_qkv", "rope_theta", "rms_norm_eps",
    "layer_norm_eps", "initializer_range", "moe_loss_weight", "attention_dropout", "resid_pdrop", "emb_pdrop",
    "router_aux_loss_coef", "aux_loss_alpha", "factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow",
    "attn_pdrop", "moe_jitter_eps", "partial_rotary_factor",
}


def floats(v, key=None):
    if isinstance(v, dict):
        return {k: floats(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [floats(x) for x in v]
    if key in FLOAT_FIELDS and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def load_config(folder):
    d = floats(json.load(open(f"{folder}/config.json")))
    tmp = tempfile.mkdtemp()
    json.dump(d, open(f"{tmp}/config.json", "w"))
    return AutoConfig.from_pretrained(tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--input")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--experts", default="grouped_mm")
    ap.add_argument("--attn", default="sdpa")
    a = ap.parse_args()

    cfg = load_config(a.config)
    if a.layers is not None:
        cfg.num_hidden_layers = a.layers
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=a.attn)
    model.eval()
    experts = None
    if hasattr(model, "set_experts_implementation"):
        try:
            model.set_experts_implementation(a.experts)
            experts = getattr(model.config, "_experts_implementation", a.experts)
        except Exception as err:  # a family without the experts interface keeps its own
            experts = f"default ({type(err).__name__}: {err})"[:120]
    if a.input:
        seqs = json.load(open(a.input))["sequences"]
        ids = torch.tensor(seqs, dtype=torch.long, device="cuda")
    else:
        ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")
    tokens = ids.numel()

    def step():
        with torch.inference_mode():
            return model(input_ids=ids, logits_to_keep=1).logits

    times = []
    for i in range(a.warmup + a.reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({
        "baseline": "transformers", "model_type": cfg.model_type, "layers": cfg.num_hidden_layers,
        "gpu": torch.cuda.get_device_name(), "attn": a.attn, "experts": experts,
        "sequences": int(ids.shape[0]), "tokens": tokens, "step_ms": round(ms, 2),
        "tokens_per_s": round(tokens / ms * 1e3, 1), "steps_ms": [round(t, 2) for t in times],
        "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))


if __name__ == "__main__":
    main()
