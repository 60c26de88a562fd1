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


def time_rounds(torch, runs, rounds, reps):
    """Times each of `runs` (name -> fn) once per round, the order rotating by one from round to round, so
    that no side always runs first (on a power-capped GPU the clocks drift with the load): {name: [ms per
    round]}. Each entry is time_ms's median of `reps` calls after 3 warm-ups."""
    names = list(runs)
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            out[n].append(time_ms(torch, runs[n], reps))
    return out


def ratio_rounds(a, b):
    """Per-round ratios a[i] / b[i] of two sides' numbers from time_rounds (same rounds): their median, lowest and
    highest round (the spread says how far one ratio can be trusted)."""
    r = [x / y for x, y in zip(a, b)]
    return statistics.median(r), min(r), max(r)
