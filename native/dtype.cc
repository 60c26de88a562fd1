#include <sstream>

#include "backend.h"

namespace eps {

size_t dtypeSize(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

const char* dtypeName(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

DType parseDType(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  if (name == "i32") return DType::I32;
  if (name == "i64") return DType::I64;
  throw std::invalid_argument("unknown dtype '" + name + "' (expected f32, bf16, f16, i32 or i64)");
}

bool isFloat(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

static std::string oomMessage(size_t asked, size_t free) {
  std::ostringstream m;
  m << "out of device memory: asked for " << asked << " bytes, " << free << " bytes free";
  return m.str();
}

OutOfMemory::OutOfMemory(size_t asked_, size_t free_)
    : std::runtime_error(oomMessage(asked_, free_)), asked(asked_), free(free_) {}

}  // namespace eps
