import contextlib
import enum

class SDPBackend(enum.Enum):
    FLASH_ATTENTION = 1
    CUDNN_ATTENTION = 2
    EFFICIENT_ATTENTION = 3
    MATH = 4

current = [None]

@contextlib.contextmanager
def sdpa_kernel(b):
    prev = current[0]; current[0] = b
    try:
        yield
    finally:
        current[0] = prev
