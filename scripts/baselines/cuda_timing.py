"""GPU timing for the baseline scripts: CUDA events around each call, the median of `reps` after
`warmup` calls. torch is passed in, so that scripts which import it late (after parsing arguments, or
only when they time) can share this."""
import statistics


def time_ms(torch, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    ev[0].record()
    for i in range(reps):
        fn()
        ev[i + 1].record()
    torch.cuda.synchronize()
    return statistics.median(ev[i].elapsed_time(ev[i + 1]) for i in range(reps))
