// count_nonfinite: how many values of each row are NaN or infinite. The engine runs it on the logits
// of every step (and, in its debug mode, on each layer's MLP output), so that a non-finite result is
// an error naming the sequence rather than a NaN in an answer.
#include <cmath>
#include <vector>

#include "dtype.h"
#include "kernels.h"

namespace eps::cpu {

// tensors: counts[R] i32, x[R,N].
void countNonfiniteKernel(const OpArgs& args) {
  const TensorRef& counts = args.tensors[0];
  const TensorRef& x = args.tensors[1];
  const int64_t R = x.dim(0), N = x.dim(1);
  int32_t* out = counts.as<int32_t>();
  parallelFor(R, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(N);
    for (int64_t r = r0; r < r1; ++r) {
      loadFloats(x, r * N, N, row.data());
      int64_t bad = 0;
      for (int64_t i = 0; i < N; ++i) bad += std::isfinite(row[i]) ? 0 : 1;
      out[r] = int32_t(bad > INT32_MAX ? INT32_MAX : bad);
    }
  });
}

EPS_CPU_KERNEL("count_nonfinite", countNonfiniteKernel);

}  // namespace eps::cpu
