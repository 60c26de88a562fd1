import warnings
import numpy as np
import torch
from torch.nn import attention

def scaled_dot_product_attention(q, k, v, is_causal=False, scale=None, enable_gqa=False):
    b = attention.current[0]
    if b == attention.SDPBackend.FLASH_ATTENTION and q.shape[-1] != v.shape[-1]:
        warnings.warn("Flash attention requires q,k,v to have the same last dimension")
        raise RuntimeError("No available kernel. Aborting execution.")
    if b == attention.SDPBackend.CUDNN_ATTENTION and enable_gqa:
        warnings.warn("cuDNN does not support enable_gqa")
        raise RuntimeError("No available kernel. Aborting execution.")
    torch._clock[0] += 1.0 + 0.1 * np.random.rand()
    Q, K, V = q.a[0], k.a[0], v.a[0]
    H, S, _ = Q.shape
    if K.shape[0] != H:
        K = np.repeat(K, H // K.shape[0], axis=0); V = np.repeat(V, H // V.shape[0], axis=0)
    s = np.einsum("hqd,hkd->hqk", Q, K) * scale
    s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    return torch.Tensor(np.einsum("hqk,hkd->hqd", p, V)[None], torch.bfloat16)
