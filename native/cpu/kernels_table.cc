#include "kernels.h"

namespace eps::cpu {

const std::unordered_map<std::string, CpuKernel>& cpuKernels() {
  static const std::unordered_map<std::string, CpuKernel> table = {
      {"embedding", embeddingKernel},
      {"rmsnorm", rmsnormKernel},
      {"rope", ropeKernel},
      {"attention", attentionKernel},
      {"matmul", matmulKernel},
      {"expert_matmul", expertMatmulKernel},
      {"swiglu", swigluKernel},
      {"router", routerKernel},
      {"moe_permute", moePermuteKernel},
      {"moe_count", moeCountKernel},
      {"moe_rank_count", moeRankCountKernel},
      {"moe_unpermute", moeUnpermuteKernel},
      {"moe_rank_dispatch", moeRankDispatchKernel},
      {"add", addKernel},
      {"sigmoid_gate_add", sigmoidGateAddKernel},
      {"copy", copyKernel},
      {"gather_rows", gatherRowsKernel},
      {"fill_random", fillRandomKernel},
  };
  return table;
}

}  // namespace eps::cpu
