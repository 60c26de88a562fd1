"""Whether torch SDPA runs a call under one backend, and if not why: shared by sdpa_attention.py and
attention_interleaved.py. torch is passed in (the scripts import it late or early as they need)."""
import warnings


def short(msg, n=220):
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def refusal(torch, backend, calls, sync=True):
    """Runs the calls once under `backend` (an SDPBackend member): None when they ran, else the reason torch gave
    (its UserWarnings say why each backend declined, before the "No available kernel" error)."""
    from torch.nn.attention import sdpa_kernel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(backend):
                for c in calls:
                    c()
            if sync:
                torch.cuda.synchronize()
            return None
        except Exception as e:  # noqa: BLE001: any refusal is a '-' with its reason
            why = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
            return short("; ".join(why[:3]) or f"{type(e).__name__}: {e}")
