// The op table and checkOp: every rule of native/ops.md, enforced once, before any backend sees the
// call. The table (opTable(), after the ops' checks) gives each op's tensors with their dtypes, its typed params
// and its ints, which checkOp enforces for every op; each op's check function adds its shape rules.
//
// A message always starts with the op's name and names the offending argument, says what was
// expected and why (which other argument fixed the size), and what came instead:
//   matmul: w must be [N,K] with K=64 (a is [3,64]); got [5,32]
// Values that live only in device memory (token ids, row maps) cannot be checked here; the kernels
// check those they would otherwise read out of bounds with.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "opcheck.h"

namespace eps {
namespace {

std::string shapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string numberText(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e16) return std::to_string(int64_t(v));
  return std::to_string(v);
}

}  // namespace

// The argument checks of one call; every failure throws std::invalid_argument "<op>: <message>".
class Check {
 public:
  Check(const OpArgs& args, const OpSpec& spec) : args(args), spec(spec) {}

  const OpArgs& args;
  const OpSpec& spec;

  [[noreturn]] void fail(const std::string& message) const {
    throw std::invalid_argument(std::string(spec.name) + ": " + message);
  }

  const TensorRef& t(int i) const { return args.tensors[i]; }
  const char* name(int i) const { return spec.tensors[i].name; }
  bool present(int i) const { return i < int(args.tensors.size()) && isPresent(args.tensors[i]); }
  // "a is [3,64]", for the "why" part of a message.
  std::string is(int i) const { return std::string(name(i)) + " is " + shapeText(t(i).shape); }

  // An empty tensor may come with no memory at all, so a null pointer marks an absent tensor only
  // when the tensor would hold elements.
  static bool isPresent(const TensorRef& t) { return t.data != nullptr || (!t.shape.empty() && t.numel() == 0); }

  void floatType(int i) const {
    if (!isFloat(t(i).dtype)) fail(std::string(name(i)) + " must be a float tensor (f32, bf16 or f16); got " + dtypeName(t(i).dtype));
  }
  void dtype(int i, DType want) const {
    if (t(i).dtype != want) fail(std::string(name(i)) + " must be " + dtypeName(want) + "; got " + dtypeName(t(i).dtype));
  }
  void rank(int i, int r, const char* pattern) const {
    if (t(i).rank() != r) {
      fail(std::string(name(i)) + " must be " + pattern + " (" + std::to_string(r) + "-d); got " + shapeText(t(i).shape));
    }
  }
  // Shape check with wildcards (-1). `pattern` is ops.md's ("[N,K]"), `why` says where the sizes
  // come from ("K=64 (a is [3,64])").
  void shape(int i, const std::vector<int64_t>& want, const char* pattern, const std::string& why) const {
    bool ok = t(i).rank() == int(want.size());
    for (size_t d = 0; ok && d < want.size(); ++d) ok = want[d] < 0 || t(i).shape[d] == want[d];
    if (!ok) fail(std::string(name(i)) + " must be " + pattern + " with " + why + "; got " + shapeText(t(i).shape));
  }

  double param(int p) const { return args.params[p]; }
  void paramInteger(int p, double lo, double hi) const {
    const double v = param(p);
    if (v != std::floor(v) || v < lo || v > hi) {
      fail(std::string(spec.params[p].name) + " must be an integer in [" + numberText(lo) + ", " + numberText(hi) +
           "]; got " + numberText(v));
    }
  }
  void intsCount(size_t want, const std::string& what) const {
    if (args.ints.size() != want) {
      fail("ints must hold " + what + " (" + std::to_string(want) + " values); got " + std::to_string(args.ints.size()));
    }
  }
};

namespace {

// ---- the ops -------------------------------------------------------------------------------------

void checkEmbedding(Check& c) {
  c.rank(1, 2, "[V,H]");
  c.rank(2, 1, "[T]");
  const int64_t V = c.t(1).dim(0), H = c.t(1).dim(1), T = c.t(2).dim(0);
  c.shape(0, {T, H}, "[T,H]", "T=" + std::to_string(T) + ", H=" + std::to_string(H) + " (" + c.is(1) + ", " + c.is(2) + ")");
  if (c.args.ints.empty()) return;
  c.intsCount(size_t(T), "the host copy of ids[T]");
  for (size_t i = 0; i < c.args.ints.size(); ++i) {
    if (c.args.ints[i] < 0 || c.args.ints[i] >= V) {
      c.fail("ids[" + std::to_string(i) + "] = " + std::to_string(c.args.ints[i]) + " is outside [0, " + std::to_string(V) +
             ") (" + c.is(1) + ")");
    }
  }
}

void checkRmsnorm(Check& c) {
  c.rank(2, 1, "[H]");
  const int64_t H = c.t(2).dim(0);
  if (c.t(1).rank() < 1 || c.t(1).dim(-1) != H) {
    c.fail("x must be [..,H] with H=" + std::to_string(H) + " (" + c.is(2) + "); got " + shapeText(c.t(1).shape));
  }
  if (c.t(0).rank() < 1 || c.t(0).dim(-1) != H || c.t(0).numel() != c.t(1).numel()) {
    c.fail("out must be [..,H] with H=" + std::to_string(H) + " and as many elements as x (" + c.is(1) + "); got " +
           shapeText(c.t(0).shape));
  }
  if (!(c.param(0) >= 0.0)) c.fail("eps must be >= 0; got " + numberText(c.param(0)));
  // rmsnorm's residual: x += residual in place first, so out must be another tensor.
  if (c.args.tensors.size() > 3 && c.present(3)) {
    if (c.t(3).shape != c.t(1).shape) c.fail("residual must have x's shape (" + c.is(1) + "); got " + shapeText(c.t(3).shape));
    if (c.t(0).data == c.t(1).data) c.fail("out must not be x when a residual is given (x keeps x + residual)");
  }
}

void checkRope(Check& c) {
  c.rank(0, 3, "[T,nh,hd]");
  const int64_t T = c.t(0).dim(0), hd = c.t(0).dim(2);
  c.shape(1, {T}, "[T]", "T=" + std::to_string(T) + " (" + c.is(0) + ")");
  c.rank(2, 1, "[rd/2]");
  if (2 * c.t(2).dim(0) > hd) {
    c.fail("invFreq must be [rd/2] with rd <= hd=" + std::to_string(hd) + " (" + c.is(0) + "); got " + shapeText(c.t(2).shape));
  }
  if (c.present(3)) {
    c.shape(3, {hd}, "[hd]", "hd=" + std::to_string(hd) + " (" + c.is(0) + ")");
    if (!(c.param(1) >= 0.0)) c.fail("normEps must be >= 0; got " + numberText(c.param(1)));
  }
}

void checkAttention(Check& c) {
  c.rank(1, 3, "[T,nq,hd]");
  const int64_t T = c.t(1).dim(0), nq = c.t(1).dim(1), hd = c.t(1).dim(2);
  const std::string fromQ = " (" + c.is(1) + ")";
  if (c.present(5)) {
    // kShared [T, r]: the first r dims of every head's key (MLA's rope key); k holds each head's other hd - r.
    c.rank(5, 2, "[T,r]");
    const int64_t r = c.t(5).dim(1);
    c.shape(5, {T, r}, "[T,r]", "T=" + std::to_string(T) + fromQ);
    if (r < 1 || r >= hd) c.fail("kShared must be [T,r] with 0 < r < hd=" + std::to_string(hd) + fromQ + "; got " + shapeText(c.t(5).shape));
    c.shape(2, {T, -1, hd - r}, "[T,nkv,hd-r]",
            "T=" + std::to_string(T) + ", hd-r=" + std::to_string(hd - r) + fromQ + ", " + c.is(5));
  } else {
    c.shape(2, {T, -1, hd}, "[T,nkv,hd]", "T=" + std::to_string(T) + ", hd=" + std::to_string(hd) + fromQ);
  }
  const int64_t nkv = c.t(2).dim(1);
  c.shape(3, {T, nkv, -1}, "[T,nkv,hdv]", "T=" + std::to_string(T) + ", nkv=" + std::to_string(nkv) + " (" + c.is(2) + ")");
  const int64_t hdv = c.t(3).dim(2);
  c.shape(0, {T, nq, hdv}, "[T,nq,hdv]",
          "T=" + std::to_string(T) + ", nq=" + std::to_string(nq) + fromQ + ", hdv=" + std::to_string(hdv) + " (" + c.is(3) + ")");
  if (nkv == 0 || nq % nkv != 0) {
    c.fail("nq % nkv must be 0 with nkv > 0; got nq=" + std::to_string(nq) + ", nkv=" + std::to_string(nkv) + " (" +
           c.is(1) + ", " + c.is(2) + ")");
  }
  c.rank(4, 1, "[B+1]");
  const int64_t n = c.t(4).dim(0);
  if (n < 1) c.fail("cuSeqlens must be [B+1] with B >= 0; got " + shapeText(c.t(4).shape));
  c.intsCount(size_t(n), "the host copy of cuSeqlens[B+1] (" + c.is(4) + ")");
  const auto& cu = c.args.ints;
  if (cu[0] != 0) c.fail("cuSeqlens[0] must be 0; got " + std::to_string(cu[0]));
  for (int64_t b = 1; b < n; ++b) {
    if (cu[b] < cu[b - 1]) {
      c.fail("cuSeqlens must not decrease; got cuSeqlens[" + std::to_string(b - 1) + "]=" + std::to_string(cu[b - 1]) +
             " > cuSeqlens[" + std::to_string(b) + "]=" + std::to_string(cu[b]));
    }
  }
  if (cu[n - 1] != T) {
    c.fail("cuSeqlens[B] must be T=" + std::to_string(T) + fromQ + "; got " + std::to_string(cu[n - 1]));
  }
}

void checkMatmul(Check& c) {
  c.rank(1, 2, "[M,K]");
  const int64_t M = c.t(1).dim(0), K = c.t(1).dim(1);
  c.shape(2, {-1, K}, "[N,K]", "K=" + std::to_string(K) + " (" + c.is(1) + ")");
  const int64_t N = c.t(2).dim(0);
  c.shape(0, {M, N}, "[M,N]", "M=" + std::to_string(M) + ", N=" + std::to_string(N) + " (" + c.is(1) + ", " + c.is(2) + ")");
  if (c.present(3)) {
    c.shape(3, {N}, "[N]", "N=" + std::to_string(N) + " (" + c.is(2) + ")");
  }
}

void checkExpertMatmul(Check& c) {
  c.rank(1, 2, "[R,K]");
  const int64_t R = c.t(1).dim(0), K = c.t(1).dim(1);
  c.shape(2, {-1, -1, K}, "[E,N,K]", "K=" + std::to_string(K) + " (" + c.is(1) + ")");
  const int64_t E = c.t(2).dim(0), N = c.t(2).dim(1);
  if (c.param(1) != 0.0) {
    // swiglu: w holds each expert's gate rows then its up rows; out gets silu(gate) * up.
    if (N % 2 != 0) c.fail("with swiglu, w must be [E,2I,K] (gate rows, then up rows); got " + shapeText(c.t(2).shape));
    c.shape(0, {R, N / 2}, "[R,I]", "R=" + std::to_string(R) + ", I=N/2=" + std::to_string(N / 2) + " (" + c.is(1) + ", " + c.is(2) + ")");
  } else {
    c.shape(0, {R, N}, "[R,N]", "R=" + std::to_string(R) + ", N=" + std::to_string(N) + " (" + c.is(1) + ", " + c.is(2) + ")");
  }
  // One count per segment; segment s uses expert s % E (S = W*E after an all-to-all from W ranks). The counts
  // are on the host (ints) or on the device (segmentCounts, i32 [S]: their sum is checked where they are read).
  if (c.present(3)) {
    c.rank(3, 1, "[S]");
    const int64_t S = c.t(3).dim(0);
    if (!c.args.ints.empty()) c.fail("counts come either as the segmentCounts tensor or as ints, not both");
    if (E == 0 || S == 0 || S % E != 0) {
      c.fail("segmentCounts must be [S] with S a positive multiple of E=" + std::to_string(E) + " (" + c.is(2) + "); got " +
             shapeText(c.t(3).shape));
    }
    return;
  }
  const size_t S = c.args.ints.size();
  if (E == 0 || S == 0 || S % size_t(E) != 0) {
    c.fail("ints must hold counts[S] with S a positive multiple of E=" + std::to_string(E) + " (" + c.is(2) + "); got " +
           std::to_string(S) + " counts");
  }
  int64_t sum = 0;
  for (size_t s = 0; s < S; ++s) {
    if (c.args.ints[s] < 0) c.fail("counts[" + std::to_string(s) + "] must be >= 0; got " + std::to_string(c.args.ints[s]));
    sum += c.args.ints[s];
  }
  if (sum != R) c.fail("counts must sum to R=" + std::to_string(R) + " (" + c.is(1) + "); got " + std::to_string(sum));
}

void checkSwiglu(Check& c) {
  c.rank(1, 2, "[T,2I]");
  const int64_t T = c.t(1).dim(0), twoI = c.t(1).dim(1);
  if (twoI % 2 != 0) c.fail("gateUp must be [T,2I] with an even last dimension; got " + shapeText(c.t(1).shape));
  c.shape(0, {T, twoI / 2}, "[T,I]", "T=" + std::to_string(T) + ", I=" + std::to_string(twoI / 2) + " (" + c.is(1) + ")");
}

void checkRouter(Check& c) {
  c.rank(2, 2, "[T,E]");
  const int64_t T = c.t(2).dim(0), E = c.t(2).dim(1);
  c.paramInteger(0, 1, double(E));
  const int64_t k = int64_t(c.param(0));
  const std::string why = "T=" + std::to_string(T) + ", k=" + std::to_string(k) + " (" + c.is(2) + ", param k)";
  c.shape(0, {T, k}, "[T,k]", why);
  c.shape(1, {T, k}, "[T,k]", why);
  if (c.present(3)) c.shape(3, {E}, "[E]", "E=" + std::to_string(E) + " (" + c.is(2) + ")");
  if (!std::isfinite(c.param(2))) c.fail("scale must be finite; got " + numberText(c.param(2)));
  c.paramInteger(5, 1, double(E));
  const int64_t G = int64_t(c.param(5));
  c.paramInteger(6, 1, double(G));
  const int64_t keep = int64_t(c.param(6));
  const int method = int(c.param(4));
  if (method == 0) {  // greedy: no groups
    if (!c.args.ints.empty()) c.fail("expertGroup is for the group methods; greedy takes no ints");
    return;
  }
  if (E % G != 0) c.fail("groups must divide E=" + std::to_string(E) + " (" + c.is(2) + "); got " + std::to_string(G));
  const int64_t per = E / G;
  if (method == 2 && per < 2) c.fail("noaux_tc sums each group's two best scores: groups need >= 2 experts; got E/groups=" + std::to_string(per));
  if (keep * per < k) {
    c.fail("the topkGroup=" + std::to_string(keep) + " kept groups of " + std::to_string(per) + " experts hold fewer than k=" +
           std::to_string(k));
  }
  if (c.args.ints.empty()) return;
  c.intsCount(size_t(E), "expertGroup[E], the group of each logit column (E=" + std::to_string(E) + ")");
  std::vector<int64_t> size(size_t(G), 0);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t g = c.args.ints[size_t(e)];
    if (g < 0 || g >= G) c.fail("expertGroup[" + std::to_string(e) + "] = " + std::to_string(g) + " is outside [0, " + std::to_string(G) + ")");
    ++size[size_t(g)];
  }
  for (int64_t g = 0; g < G; ++g) {
    if (size[size_t(g)] != per) {
      c.fail("expertGroup must give every group E/groups=" + std::to_string(per) + " experts; group " + std::to_string(g) + " has " +
             std::to_string(size[size_t(g)]));
    }
  }
}

void checkCopyCols(Check& c) {
  c.rank(0, 2, "[R,No]");
  c.rank(1, 2, "[Rx,Nx]");
  const auto& v = c.args.ints;
  c.intsCount(4, "dstCol, srcCol, width, rowRepeat");
  const int64_t R = c.t(0).dim(0), No = c.t(0).dim(1), Rx = c.t(1).dim(0), Nx = c.t(1).dim(1);
  const int64_t dstCol = v[0], srcCol = v[1], width = v[2], rep = v[3];
  if (rep < 1) c.fail("rowRepeat must be >= 1; got " + std::to_string(rep));
  if (width < 0 || dstCol < 0 || srcCol < 0 || dstCol + width > No || srcCol + width > Nx) {
    c.fail("columns [dstCol, dstCol+width) = [" + std::to_string(dstCol) + ", " + std::to_string(dstCol + width) + ") of out (No=" +
           std::to_string(No) + ") and [srcCol, srcCol+width) = [" + std::to_string(srcCol) + ", " + std::to_string(srcCol + width) +
           ") of x (Nx=" + std::to_string(Nx) + ") must lie inside them");
  }
  if (Rx * rep != R) {
    c.fail("out must have Rx*rowRepeat rows: " + std::to_string(Rx) + "*" + std::to_string(rep) + " (" + c.is(1) + "); got R=" +
           std::to_string(R));
  }
}

void checkMoePermute(Check& c) {
  c.rank(3, 2, "[T,H]");
  const int64_t T = c.t(3).dim(0), H = c.t(3).dim(1);
  c.shape(4, {T, -1}, "[T,k]", "T=" + std::to_string(T) + " (" + c.is(3) + ")");
  const int64_t k = c.t(4).dim(1);
  c.shape(1, {T, k}, "[T,k]", "T=" + std::to_string(T) + ", k=" + std::to_string(k) + " (" + c.is(4) + ")");
  c.rank(2, 1, "[E]");
  c.shape(0, {T * k, H}, "[T*k,H]", "T*k=" + std::to_string(T * k) + ", H=" + std::to_string(H) + " (" + c.is(3) + ", " + c.is(4) + ")");
}

// Micro-chunk token bounds (M+1 values from 0 to T, never decreasing), as moe_count and moe_rank_count take them.
void checkBounds(Check& c, const int64_t* b, int64_t M, int64_t T, int tokensTensor) {
  if (b[0] != 0 || b[M] != T) c.fail("bounds must start at 0 and end at T=" + std::to_string(T) + " (" + c.is(tokensTensor) + ")");
  for (int64_t m = 1; m <= M; ++m)
    if (b[m] < b[m - 1]) c.fail("bounds must not decrease; bounds[" + std::to_string(m) + "] < bounds[" + std::to_string(m - 1) + "]");
}

void checkMoeCount(Check& c) {
  c.rank(0, 2, "[M,E]");
  c.rank(1, 2, "[T,k]");
  const int64_t M = c.t(0).dim(0), T = c.t(1).dim(0);
  const auto& b = c.args.ints;
  if (int64_t(b.size()) != M + 1) {
    c.fail("ints must hold bounds[M+1] with M=" + std::to_string(M) + " (" + c.is(0) + "); got " + std::to_string(b.size()));
  }
  checkBounds(c, b.data(), M, T, 1);
}

void checkMoeRankCount(Check& c) {
  c.rank(0, 2, "[M,W]");
  c.rank(1, 2, "[T,k]");
  const int64_t M = c.t(0).dim(0), W = c.t(0).dim(1), T = c.t(1).dim(0);
  if (W < 1) c.fail("counts must have at least one rank (W >= 1); got " + shapeText(c.t(0).shape));
  const auto& ints = c.args.ints;
  if (int64_t(ints.size()) != W + 1 + M + 1) {
    c.fail("ints must hold offsets[W+1] then bounds[M+1] with W=" + std::to_string(W) + ", M=" + std::to_string(M) + " (" + c.is(0) +
           "); got " + std::to_string(ints.size()));
  }
  if (ints[0] != 0) c.fail("offsets must start at 0");
  for (int64_t p = 1; p <= W; ++p)
    if (ints[p] < ints[p - 1]) c.fail("offsets must not decrease; offsets[" + std::to_string(p) + "] < offsets[" + std::to_string(p - 1) + "]");
  checkBounds(c, ints.data() + W + 1, M, T, 1);
}

void checkMoeUnpermute(Check& c) {
  c.rank(0, 2, "[T,H]");
  const int64_t T = c.t(0).dim(0), H = c.t(0).dim(1);
  c.shape(1, {-1, H}, "[R,H]", "H=" + std::to_string(H) + " (" + c.is(0) + ")");
  c.shape(2, {T, -1}, "[T,k]", "T=" + std::to_string(T) + " (" + c.is(0) + ")");
  const int64_t k = c.t(2).dim(1);
  c.shape(3, {T, k}, "[T,k]", "T=" + std::to_string(T) + ", k=" + std::to_string(k) + " (" + c.is(2) + ")");
}

void checkMoeRankDispatch(Check& c) {
  c.rank(5, 2, "[T,H]");
  c.rank(2, 1, "[W]");
  const int64_t T = c.t(5).dim(0), H = c.t(5).dim(1), W = c.t(2).dim(0);
  if (W < 1) c.fail("counts must have at least one rank (W >= 1); got " + shapeText(c.t(2).shape));
  c.shape(6, {T, -1}, "[T,k]", "T=" + std::to_string(T) + " (" + c.is(5) + ")");
  const int64_t k = c.t(6).dim(1);
  const std::string tk = "T=" + std::to_string(T) + ", k=" + std::to_string(k) + " (" + c.is(6) + ")";
  c.shape(7, {T, k}, "[T,k]", tk);
  c.shape(1, {T, W}, "[T,W]", "T=" + std::to_string(T) + ", W=" + std::to_string(W) + " (" + c.is(5) + ", " + c.is(2) + ")");
  // Each token goes to at most min(k, W) ranks.
  const int64_t R = T * std::min(k, W);
  const std::string rows = "R=T*min(k,W)=" + std::to_string(R) + " (" + c.is(6) + ", " + c.is(2) + ")";
  c.shape(0, {R, H}, "[R,H]", rows + ", H=" + std::to_string(H));
  c.shape(3, {R, k}, "[R,k]", rows);
  c.shape(4, {R, k}, "[R,k]", rows);
  const auto& o = c.args.ints;
  if (int64_t(o.size()) != W + 1) {
    c.fail("ints must hold offsets[W+1] with W=" + std::to_string(W) + " (" + c.is(2) + "); got " + std::to_string(o.size()));
  }
  if (o.front() != 0) c.fail("offsets must start at 0; got " + std::to_string(o.front()));
  for (size_t p = 1; p < o.size(); ++p) {
    if (o[p] < o[p - 1]) c.fail("offsets must not decrease; offsets[" + std::to_string(p) + "] < offsets[" + std::to_string(p - 1) + "]");
  }
  if (o.back() > INT32_MAX) c.fail("offsets[W] must fit in i32; got " + std::to_string(o.back()));
}

void sameNumel(Check& c, int i, int ref) {
  if (c.t(i).numel() != c.t(ref).numel()) {
    c.fail(std::string(c.name(i)) + " must have " + std::to_string(c.t(ref).numel()) + " elements (" + c.is(ref) + "); got " +
           shapeText(c.t(i).shape));
  }
}

void checkAdd(Check& c) {
  sameNumel(c, 1, 0);
  sameNumel(c, 2, 0);
}

void checkClamp(Check& c) {
  sameNumel(c, 1, 0);
  if (c.param(0) > c.param(1)) {
    c.fail("lo must be <= hi; got lo " + numberText(c.param(0)) + ", hi " + numberText(c.param(1)));
  }
}

void checkSigmoidGateAdd(Check& c) {
  c.rank(0, 2, "[T,H]");
  const int64_t T = c.t(0).dim(0), H = c.t(0).dim(1);
  const std::string why = " (" + c.is(0) + ")";
  c.shape(1, {T, H}, "[T,H]", "T=" + std::to_string(T) + ", H=" + std::to_string(H) + why);
  c.shape(2, {T, 1}, "[T,1]", "T=" + std::to_string(T) + why);
}

void checkCopy(Check& c) {
  const DType d = c.t(0).dtype, s = c.t(1).dtype;
  const bool ok = (isFloat(d) && isFloat(s)) || (d == DType::I32 && s == DType::I32);
  if (!ok) {
    c.fail(std::string("dst and src must both be float or both i32; got dst ") + dtypeName(d) + ", src " + dtypeName(s));
  }
  sameNumel(c, 0, 1);
}

void checkGatherRows(Check& c) {
  c.rank(1, 2, "[T,H]");
  c.rank(2, 1, "[R]");
  const int64_t H = c.t(1).dim(1), R = c.t(2).dim(0);
  c.shape(0, {R, H}, "[R,H]", "R=" + std::to_string(R) + ", H=" + std::to_string(H) + " (" + c.is(1) + ", " + c.is(2) + ")");
}

void checkFillRandom(Check& c) {
  c.paramInteger(0, 0, 9007199254740992.0);  // 2^53: every integer up to it is exact in a double
  if (!std::isfinite(c.param(1))) c.fail("std must be finite; got " + numberText(c.param(1)));
}

void checkCountNonfinite(Check& c) {
  c.rank(1, 2, "[R,N]");
  const int64_t R = c.t(1).dim(0);
  c.shape(0, {R}, "[R]", "R=" + std::to_string(R) + " (" + c.is(1) + ")");
}

// Row helpers: a tensor of each kind, the param kinds, ints.
TensorSpec flt(const char* name) { return {name, TensorKind::Float}; }
TensorSpec i32(const char* name) { return {name, TensorKind::I32}; }
TensorSpec f32(const char* name) { return {name, TensorKind::F32}; }
TensorSpec anyType(const char* name) { return {name, TensorKind::Any}; }
TensorSpec optional(TensorSpec t) {
  t.optional = true;
  return t;
}
ParamSpec number(const char* name) { return {name, ParamKind::Number}; }
ParamSpec boolean(const char* name) { return {name, ParamKind::Bool}; }
ParamSpec oneOf(const char* name, std::vector<const char*> values) { return {name, ParamKind::Enum, std::move(values)}; }
IntsSpec ints(const char* name) { return {name}; }
IntsSpec optionalInts(const char* name) { return {name, true}; }

}  // namespace

// The table. A row: name, tensors, params, ints, outputs {index, may alias}, the op's check.
const std::vector<OpSpec>& opTable() {
  static const std::vector<OpSpec> table = {
      {"embedding", {flt("out"), flt("table"), i32("ids")}, {}, {optionalInts("hostIds")}, {{0, {}}}, checkEmbedding},
      {"rmsnorm", {flt("out"), flt("x"), flt("w"), optional(flt("residual"))}, {number("eps")}, {}, {{0, {1}}}, checkRmsnorm},
      {"layernorm", {flt("out"), flt("x"), flt("w")}, {number("eps")}, {}, {{0, {1}}}, checkRmsnorm},
      {"rope", {flt("x"), i32("positions"), f32("invFreq"), optional(flt("normWeight"))}, {number("attentionScaling"), number("normEps")},
       {}, {{0, {}}}, checkRope},
      {"attention", {flt("out"), flt("q"), flt("k"), flt("v"), i32("cuSeqlens"), optional(flt("kShared"))}, {number("scale")}, {ints("cuSeqlensHost")},
       {{0, {}}}, checkAttention},
      {"matmul", {flt("out"), flt("a"), flt("w"), optional(flt("bias"))}, {}, {}, {{0, {}}}, checkMatmul},
      {"expert_matmul", {flt("out"), flt("a"), flt("w"), optional(i32("segmentCounts"))},
       {oneOf("kernel", {"grouped", "dense", "grouped_sm90"}), boolean("swiglu")}, {optionalInts("counts")}, {{0, {}}},
       checkExpertMatmul},
      {"swiglu", {flt("out"), flt("gateUp")}, {}, {}, {{0, {}}}, checkSwiglu},
      {"router", {i32("topkIdx"), f32("topkW"), flt("logits"), optional(f32("bias"))},
       {number("k"), boolean("renormalize"), number("scale"), oneOf("scoring", {"softmax", "sigmoid"}),
        oneOf("method", {"greedy", "group_limited_greedy", "noaux_tc"}), number("groups"), number("topkGroup")},
       {optionalInts("expertGroup")}, {{0, {}}, {1, {}}}, checkRouter},
      {"moe_permute", {flt("out"), i32("rowMap"), i32("counts"), flt("x"), i32("topkIdx")}, {}, {}, {{0, {}}, {1, {}}, {2, {}}},
       checkMoePermute},
      {"moe_count", {i32("counts"), i32("topkIdx")}, {}, {ints("bounds")}, {{0, {}}}, checkMoeCount},
      {"moe_rank_count", {i32("counts"), i32("topkIdx")}, {}, {ints("offsets"), ints("bounds")}, {{0, {}}}, checkMoeRankCount},
      {"moe_rank_dispatch",
       {flt("out"), i32("rowMap"), i32("counts"), i32("localIdx"), f32("localW"), flt("x"), i32("topkIdx"), f32("topkW")}, {},
       {ints("offsets")}, {{0, {}}, {1, {}}, {2, {}}, {3, {}}, {4, {}}}, checkMoeRankDispatch},
      {"moe_unpermute", {flt("out"), flt("y"), i32("rowMap"), f32("topkW")}, {boolean("accumulate")}, {}, {{0, {}}},
       checkMoeUnpermute},
      {"add", {flt("out"), flt("a"), flt("b")}, {}, {}, {{0, {1, 2}}}, checkAdd},
      {"clamp", {flt("out"), flt("x")}, {number("lo"), number("hi")}, {}, {{0, {1}}}, checkClamp},
      {"sigmoid_gate_add", {flt("out"), flt("y"), flt("gate")}, {}, {}, {{0, {}}}, checkSigmoidGateAdd},
      {"copy", {anyType("dst"), anyType("src")}, {}, {}, {{0, {}}}, checkCopy},
      {"gather_rows", {flt("out"), flt("x"), i32("idx")}, {}, {}, {{0, {}}}, checkGatherRows},
      {"copy_cols", {flt("out"), flt("x")}, {}, {ints("cols")}, {{0, {}}}, checkCopyCols},
      {"fill_random", {flt("out")}, {number("seed"), number("std")}, {}, {{0, {}}}, checkFillRandom},
      {"count_nonfinite", {i32("counts"), flt("x")}, {}, {}, {{0, {}}}, checkCountNonfinite},
  };
  return table;
}

const char* tensorKindName(TensorKind kind) {
  switch (kind) {
    case TensorKind::Float: return "float";
    case TensorKind::I32: return "i32";
    case TensorKind::F32: return "f32";
    case TensorKind::Any: return "any";
  }
  return "?";
}

const char* paramKindName(ParamKind kind) {
  switch (kind) {
    case ParamKind::Number: return "number";
    case ParamKind::Bool: return "boolean";
    case ParamKind::Enum: return "enum";
  }
  return "?";
}

namespace {

template <class T>
std::string joinNames(const std::vector<T>& items, const char* sep) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) {
    if constexpr (std::is_same_v<T, const char*>) s += (i ? sep : "") + std::string(items[i]);
    else s += (i ? sep : "") + std::string(items[i].name);
  }
  return s;
}

// "grouped=0, dense=1": an enum's names with their wire codes.
std::string enumText(const ParamSpec& p) {
  std::string s;
  for (size_t v = 0; v < p.values.size(); ++v) s += (v ? ", " : "") + std::string(p.values[v]) + "=" + std::to_string(v);
  return s;
}

// The table's rules every op shares: tensor dtypes, param kinds, no ints where the op takes none.
void checkKinds(const Check& c) {
  for (size_t i = 0; i < c.spec.tensors.size() && i < c.args.tensors.size(); ++i) {
    if (!c.present(int(i))) continue;
    switch (c.spec.tensors[i].kind) {
      case TensorKind::Float: c.floatType(int(i)); break;
      case TensorKind::I32: c.dtype(int(i), DType::I32); break;
      case TensorKind::F32: c.dtype(int(i), DType::F32); break;
      case TensorKind::Any: break;
    }
  }
  for (size_t p = 0; p < c.spec.params.size(); ++p) {
    const ParamSpec& spec = c.spec.params[p];
    const double v = c.param(int(p));
    if (spec.kind == ParamKind::Bool && v != 0.0 && v != 1.0) {
      c.fail(std::string(spec.name) + " must be a boolean (0 or 1); got " + numberText(v));
    }
    if (spec.kind == ParamKind::Enum && (v != std::floor(v) || v < 0 || v >= double(spec.values.size()))) {
      c.fail(std::string(spec.name) + " must be one of " + enumText(spec) + "; got " + numberText(v));
    }
  }
  if (c.spec.ints.empty() && !c.args.ints.empty()) c.fail("takes no ints; got " + std::to_string(c.args.ints.size()));
}

// Byte ranges of two tensors overlap (empty tensors never do).
bool overlaps(const TensorRef& a, const TensorRef& b) {
  if (!a.data || !b.data || a.numel() == 0 || b.numel() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  const auto a1 = a0 + uintptr_t(a.numel()) * dtypeSize(a.dtype), b1 = b0 + uintptr_t(b.numel()) * dtypeSize(b.dtype);
  return a0 < b1 && b0 < a1;
}

// Outputs may share memory with an input only where ops.md allows it, and then exactly (same
// start, same size): a partial overlap would have the kernel read values it already overwrote.
void checkAliasing(const Check& c) {
  const int n = int(c.args.tensors.size());
  for (const Output& o : c.spec.outputs) {
    for (int j = 0; j < n; ++j) {
      if (j == o.index || !c.present(j) || !overlaps(c.t(o.index), c.t(j))) continue;
      const bool allowed = std::find(o.mayAlias.begin(), o.mayAlias.end(), j) != o.mayAlias.end();
      const bool exact = c.t(o.index).data == c.t(j).data &&
                         c.t(o.index).numel() * dtypeSize(c.t(o.index).dtype) == c.t(j).numel() * dtypeSize(c.t(j).dtype);
      if (allowed && exact) continue;
      c.fail(std::string(c.name(o.index)) + (allowed ? " may alias " : " must not overlap ") + c.name(j) +
             (allowed ? " only exactly (same memory, same size)" : "") + "; they share memory");
    }
  }
}

}  // namespace

void checkOp(const OpArgs& args) {
  const auto& specs = opTable();
  const auto it = std::find_if(specs.begin(), specs.end(), [&](const OpSpec& s) { return args.name == s.name; });
  if (it == specs.end()) {
    std::vector<const char*> names;
    for (const auto& s : specs) names.push_back(s.name);
    throw std::invalid_argument("unknown op '" + args.name + "' (known: " + joinNames(names, ", ") + ")");
  }
  const OpSpec& spec = *it;
  Check c(args, spec);

  const size_t total = spec.tensors.size();
  size_t required = 0;
  while (required < total && !spec.tensors[required].optional) ++required;
  if (args.tensors.size() < required || args.tensors.size() > total) {
    const std::string count = required == total ? std::to_string(total) : std::to_string(required) + " to " + std::to_string(total);
    c.fail("expects " + count + " tensors (" + joinNames(spec.tensors, ", ") + "); got " + std::to_string(args.tensors.size()));
  }
  for (size_t i = 0; i < required; ++i) {
    if (!c.present(int(i))) c.fail(std::string(spec.tensors[i].name) + " is required; got null");
  }
  if (args.params.size() != spec.params.size()) {
    const std::string want = spec.params.empty() ? "no params" : std::to_string(spec.params.size()) + " params (" +
                                                                      joinNames(spec.params, ", ") + ")";
    c.fail("expects " + want + "; got " + std::to_string(args.params.size()));
  }
  for (size_t p = 0; p < args.params.size(); ++p) {
    if (!std::isfinite(args.params[p])) c.fail(std::string(spec.params[p].name) + " must be finite; got " + numberText(args.params[p]));
  }
  checkKinds(c);
  spec.check(c);
  checkAliasing(c);
}

std::vector<int64_t> checkedDeviceCounts(const int32_t* counts, size_t n, int64_t rows) {
  std::vector<int64_t> out(counts, counts + n);
  int64_t sum = 0;
  for (int64_t c : out) {
    if (c < 0) throw std::invalid_argument("expert_matmul: a device count is negative");
    sum += c;
  }
  if (sum > rows)
    throw std::invalid_argument("expert_matmul: the device counts sum to " + std::to_string(sum) + ", past R=" + std::to_string(rows));
  return out;
}

}  // namespace eps
