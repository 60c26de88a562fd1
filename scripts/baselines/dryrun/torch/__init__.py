# A numpy stand-in for the parts of torch the baseline scripts use: a dry run of their logic on the CPU.
import numpy as np
__version__ = "fake"


class version:
    cuda = "fake"

bfloat16, float32, int32 = "bf16", "f32", "i32"
_reg = {}
_clock = [0.0]

class device:
    def __init__(self, s): self.s = s

class Tensor:
    def __init__(self, arr, dtype=float32):
        self.a = np.asarray(arr, dtype=np.int64 if dtype == int32 else np.float64)
        self.dtype = dtype
        _reg[id(self)] = self
    @property
    def shape(self): return self.a.shape
    def data_ptr(self): return id(self)
    def float(self): return Tensor(self.a, float32)
    def norm(self): return Tensor(np.sqrt((self.a ** 2).sum()))
    def item(self): return float(self.a)
    def fill_(self, v): self.a[...] = v; return self
    def transpose(self, i, j): return View(np.swapaxes(self.a, i, j), self.dtype)
    def unsqueeze(self, d): return View(np.expand_dims(self.a, d), self.dtype)
    def repeat_interleave(self, n, dim): return Tensor(np.repeat(self.a, n, axis=dim), self.dtype)
    def cumsum(self, d, dtype=None): return Tensor(np.cumsum(self.a, axis=d), dtype or self.dtype)
    def __getitem__(self, i): return View(self.a[i], self.dtype)
    def __sub__(self, o): return Tensor(self.a - o.a, self.dtype)
    def __truediv__(self, o): return Tensor(self.a / (o.a if isinstance(o, Tensor) else o), self.dtype)
    def __mul__(self, o): return Tensor(self.a * (o.a if isinstance(o, Tensor) else o), self.dtype)
    def __matmul__(self, o):  # only timed (the ceiling): not computed when large
        _clock[0] += 1.0
        m, k, n = self.a.shape[0], self.a.shape[1], o.a.shape[1]
        return Tensor(np.zeros((m, n)) if m * k * n > 1e8 else self.a @ o.a, self.dtype)

class View(Tensor):
    def __init__(self, arr, dtype):
        self.a = arr; self.dtype = dtype; _reg[id(self)] = self

class Generator:
    def __init__(self, device=None): self.rng = np.random.default_rng(0)
    def manual_seed(self, s): self.rng = np.random.default_rng(s); return self

def randn(*shape, device=None, dtype=float32, generator=None):
    if len(shape) == 2 and np.prod(shape) > 3e7:  # the ceiling's 8192^2 operands: only timed, never read
        return Tensor(np.zeros(shape), dtype)
    return Tensor((generator.rng if generator else np.random.default_rng()).standard_normal(shape), dtype)
def tensor(v, device=None, dtype=float32): return Tensor(np.array(v), dtype)
def zeros(*shape, device=None, dtype=float32): return Tensor(np.zeros(shape), dtype)
def empty(*shape, device=None, dtype=float32): return Tensor(np.full(shape, 7.0), dtype)
def cat(ts): return Tensor(np.concatenate([t.a for t in ts]), ts[0].dtype)

def _grouped_mm(a, wt, offs):
    _clock[0] += 1.0 + 0.1 * np.random.rand()
    out = np.zeros((a.shape[0], wt.shape[2]))
    start = 0
    for e, end in enumerate(offs.a):
        out[start:end] = a.a[start:end] @ wt.a[e]
        start = int(end)
    return Tensor(out, bfloat16)

class _Event:
    def __init__(self, enable_timing=True): self.t = None
    def record(self): self.t = _clock[0]
    def elapsed_time(self, o): return (o.t - self.t) + 1e-3

class _Stream:
    cuda_stream = 1234

class cuda:
    Event = _Event
    @staticmethod
    def synchronize(): pass
    @staticmethod
    def current_stream(): return _Stream()
    @staticmethod
    def get_device_name(i): return "FakeGPU"
    @staticmethod
    def empty_cache(): pass
    @staticmethod
    def is_available(): return True

class _Cudnn:
    @staticmethod
    def version(): return 91400
class backends:
    cudnn = _Cudnn

from . import nn  # noqa: E402
