// The JS-facing wrappers of the addon. Other binding files (native/bindings/, e.g. nccl_binding.cc)
// unwrap these to reach the backend objects.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "backend.h"

namespace eps::js {

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit DeviceWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Backend> backend;

 private:
  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value CreateStream(const Napi::CallbackInfo& info);
  Napi::Value CreateEvent(const Napi::CallbackInfo& info);
  Napi::Value FreeBytes(const Napi::CallbackInfo& info);
  Napi::Value MemoryCounters(const Napi::CallbackInfo& info);
  Napi::Value OpNames(const Napi::CallbackInfo& info);
  Napi::Value Op(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
};

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;
  std::shared_ptr<Backend> backend;
  // The memory, through a cell that the tensor and all its views share: dispose() of the tensor that
  // allocated it (the owner) empties the cell, so the memory goes back to the allocator at once (after
  // the ops already enqueued, which hold their own references) instead of when the garbage collector
  // finalizes the last view; a view's dispose() or finalization only drops the view's reference.
  std::shared_ptr<std::shared_ptr<Storage>> cell;
  bool owner = false;
  const std::shared_ptr<Storage>& storage() const;  // null once disposed
  size_t byteOffset = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t trackedBytes = 0;  // bytes reported to V8 as external memory (owning CPU tensors only)
  size_t byteLength() const;
  TensorRef ref(const char* what) const;  // throws when disposed

 private:
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Download(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDtype(const Napi::CallbackInfo& info);
  Napi::Value GetShape(const Napi::CallbackInfo& info);
  Napi::Value GetByteLength(const Napi::CallbackInfo& info);
};

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit StreamWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Stream> stream;
  Stream& get(const char* what) const;

 private:
  Napi::Value Record(const Napi::CallbackInfo& info);
  Napi::Value Wait(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
};

class EventWrap : public Napi::ObjectWrap<EventWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit EventWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Event> event;
  Event& get(const char* what) const;

 private:
  Napi::Value ElapsedSince(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
};

// Turns a C++ exception into a JS error naming `what`; OutOfMemory becomes an error with
// code EPS_OUT_OF_MEMORY and the asked/free sizes, a bad argument one with code EPS_INVALID_ARGUMENT.
Napi::Error toJsError(Napi::Env env, const char* what, const std::exception& e);

// Resolves a promise on the JS thread once `enqueue` has made the stream reach a point; the
// promise rejects with the stream's error if an op before that point failed.
using Enqueue = std::function<void(HostCallback)>;
Napi::Promise whenReached(Napi::Env env, const Enqueue& enqueue,
                          std::shared_ptr<std::vector<uint8_t>> bytes);

template <class T>
T* unwrapAs(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(T::constructor->Value()))
    throw std::invalid_argument(std::string(what) + " has the wrong type");
  return T::Unwrap(v.As<Napi::Object>());
}

}  // namespace eps::js
