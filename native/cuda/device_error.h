// Errors that only a kernel can see (an index read from device memory that points outside a
// tensor). The kernel skips the bad element instead of faulting, which would break the whole CUDA
// context, and writes the first such error of its stream into a slot of mapped (zero-copy) host
// memory; the stream's host callbacks read the slot and report the error as the stream's, as the
// CPU backend does when a kernel throws. Shared by the .cu kernels and the C++ host code.
#pragma once

namespace eps::cuda {

enum class IndexCheck : int {
  None = 0,
  EmbeddingIds = 1,  // embedding: ids[i] outside [0, V)
  GatherIdx = 2,     // gather_rows: idx[i] outside [0, T)
  UnpermuteRow = 3,  // moe_unpermute: rowMap[i] outside [-1, R)
};

struct DeviceErrorSlot {
  int check;  // an IndexCheck; 0 while no error
  int pad;
  long long index;
  long long value;
  long long limit;
};

}  // namespace eps::cuda
