// A C entry point to the sm_90a attention kernel for the baseline scripts (scripts/baselines/
// attention_interleaved.py loads it with ctypes), so that ours and torch SDPA run in one process on the same
// tensors, timed in alternation under the same clocks and power state. Bench-only: the addon does not build it.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared -I native/cuda \
//     native/cuda/bench/attention_capi.cu native/cuda/attention_sm90.cu -o libattn.so
#include "attention_sm90.h"

extern "C" {

// tiles: DEVICE memory, nTiles x 4 int32 (AttentionTile: seqStart, seqLen, q0, pad). Returns the launch's
// cudaError_t (cudaErrorInvalidValue: a shape the kernel refuses).
int epsAttentionSm90(void* out, const void* q, const void* k, const void* v, const void* tiles, int nTiles,
                     long long T, int nq, int nkv, int hd, int hdv, float scale, int mode, int headGroup, void* stream) {
  static_assert(sizeof(eps::cuda::AttentionTile) == 16, "four int32 per tile");
  eps::cuda::AttentionSm90Args a{};
  a.out = out;
  a.q = q;
  a.k = k;
  a.v = v;
  a.tiles = static_cast<const eps::cuda::AttentionTile*>(tiles);
  a.nTiles = nTiles;
  a.T = T;
  a.nq = nq;
  a.nkv = nkv;
  a.hd = hd;
  a.hdv = hdv;
  a.scale = scale;
  a.mode = mode;
  a.headGroup = headGroup;
  return int(eps::cuda::attentionSm90(a, static_cast<cudaStream_t>(stream)));
}

int epsAttentionSm90Supported(int device) { return eps::cuda::attentionSm90Supported(device) ? 1 : 0; }

}  // extern "C"
