// The op table: every op of ops.md written once, in opcheck.cc: its tensors (in call order, with the
// dtype each must have), its params (typed: number, boolean or enum), its host ints, which outputs
// may alias which inputs, and the op's own shape rules. checkOp enforces it before any backend sees a
// call; the addon exports it (opTable()) so that test/opTable.test.ts can hold it against
// src/native/opTable.ts, from which the TypeScript signatures come, and against ops.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend.h"

namespace eps {

enum class TensorKind { Float, I32, F32, Any };  // Float: f32, bf16 or f16; Any: the op's own rule decides
enum class ParamKind { Number, Bool, Enum };     // Bool: 0 or 1; Enum: the index of one of `values`

struct TensorSpec {
  const char* name;
  TensorKind kind;
  bool optional = false;  // only at the end: tensors before the first optional one are required
};

struct ParamSpec {
  const char* name;
  ParamKind kind;
  std::vector<const char*> values = {};  // an enum's names; the wire code is the index
};

// One host integer array; an op's arrays are concatenated in table order into OpArgs::ints.
struct IntsSpec {
  const char* name;
  bool optional = false;
};

// An output tensor, and the inputs it may share memory with (exactly: same start, same size).
struct Output {
  int index;
  std::vector<int> mayAlias;
};

class Check;

struct OpSpec {
  const char* name;
  std::vector<TensorSpec> tensors;
  std::vector<ParamSpec> params;
  std::vector<IntsSpec> ints;
  std::vector<Output> outputs;
  void (*check)(Check&);  // the shape and ints rules particular to the op
};

const std::vector<OpSpec>& opTable();
const char* tensorKindName(TensorKind kind);  // "float" | "i32" | "f32" | "any"
const char* paramKindName(ParamKind kind);    // "number" | "boolean" | "enum"

// Validates an op call against its contract (ops.md); throws std::invalid_argument naming the op
// and the offending argument.
void checkOp(const OpArgs& args);

// expert_matmul's counts that arrive in device memory (segmentCounts), once a backend has them in host-readable
// memory: checked as checkOp checks host counts (none negative; their sum at most `rows`, the rows of a) and
// returned widened, as OpArgs::ints holds them. Throws std::invalid_argument otherwise.
std::vector<int64_t> checkedDeviceCounts(const int32_t* counts, size_t n, int64_t rows);

}  // namespace eps
