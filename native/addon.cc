// The addon's entry: exports backends(), devices(), openDevice(), versions(), opTable() and the
// wrapper classes of binding.h. Every method turns C++ exceptions into JS errors that name the call.
#include <map>
#include <mutex>

#include "binding.h"
#include "opcheck.h"

#ifdef EPS_WITH_CUDA
namespace eps::js {
void registerNccl(Napi::Env env, Napi::Object exports);
}
#endif

namespace eps::js {

Napi::FunctionReference* DeviceWrap::constructor = nullptr;
Napi::FunctionReference* TensorWrap::constructor = nullptr;
Napi::FunctionReference* StreamWrap::constructor = nullptr;
Napi::FunctionReference* EventWrap::constructor = nullptr;

namespace {

template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, const char* what, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw toJsError(info.Env(), what, e);
  }
}

std::vector<int64_t> toShape(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw std::invalid_argument(std::string(what) + ": shape must be an array");
  auto arr = v.As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value d = arr.Get(i);
    if (!d.IsNumber()) throw std::invalid_argument(std::string(what) + ": shape entries must be numbers");
    double x = d.As<Napi::Number>().DoubleValue();
    if (x < 0 || x != static_cast<double>(static_cast<int64_t>(x)))
      throw std::invalid_argument(std::string(what) + ": shape entries must be non-negative integers");
    shape.push_back(static_cast<int64_t>(x));
  }
  return shape;
}

Napi::Array fromShape(Napi::Env env, const std::vector<int64_t>& shape) {
  auto arr = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) arr.Set(i, Napi::Number::New(env, static_cast<double>(shape[i])));
  return arr;
}

int64_t numelOf(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// One backend object per (kind, index), shared by every openDevice() call, so that CUDA handles and
// memory pools exist once per GPU.
std::shared_ptr<Backend> sharedBackend(const std::string& kind, int index) {
  static std::mutex mu;
  static std::map<std::pair<std::string, int>, std::weak_ptr<Backend>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{kind, index}];
  if (auto live = slot.lock()) return live;
  std::shared_ptr<Backend> made;
  if (kind == "cpu") {
    if (index != 0) throw std::invalid_argument("the cpu backend has one device, index 0");
    made = makeCpuBackend();
  }
#ifdef EPS_WITH_CUDA
  else if (kind == "cuda") {
    int n = cudaDeviceCount();
    if (index < 0 || index >= n)
      throw std::invalid_argument("cuda device " + std::to_string(index) + " does not exist (" + std::to_string(n) + " visible)");
    made = makeCudaBackend(index);
  }
#endif
  else {
    throw std::invalid_argument("backend '" + kind + "' is not built into this addon");
  }
  slot = made;
  return made;
}

}  // namespace

Napi::Error toJsError(Napi::Env env, const char* what, const std::exception& e) {
  auto err = Napi::Error::New(env, *what ? std::string(what) + ": " + e.what() : std::string(e.what()));
  if (auto* oom = dynamic_cast<const OutOfMemory*>(&e)) {
    err.Set("name", Napi::String::New(env, "OutOfMemoryError"));
    err.Set("code", Napi::String::New(env, "EPS_OUT_OF_MEMORY"));
    err.Set("askedBytes", Napi::Number::New(env, static_cast<double>(oom->asked)));
    err.Set("freeBytes", Napi::Number::New(env, static_cast<double>(oom->free)));
  } else if (dynamic_cast<const std::invalid_argument*>(&e)) {
    err.Set("code", Napi::String::New(env, "EPS_INVALID_ARGUMENT"));
  } else {
    err.Set("code", Napi::String::New(env, "EPS_NATIVE_ERROR"));
  }
  return err;
}

namespace {
struct Pending {
  Napi::Promise::Deferred deferred;
  std::shared_ptr<std::vector<uint8_t>> bytes;
  std::string error;
};
}  // namespace

Napi::Promise whenReached(Napi::Env env, const Enqueue& enqueue, std::shared_ptr<std::vector<uint8_t>> bytes) {
  auto* pending = new Pending{Napi::Promise::Deferred::New(env), std::move(bytes), {}};
  Napi::Promise promise = pending->deferred.Promise();
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "eps-stream-point", 0, 1);
  enqueue([tsfn, pending](const std::string& error) mutable {
    pending->error = error;
    tsfn.BlockingCall(pending, [](Napi::Env env, Napi::Function, Pending* p) {
      if (!p->error.empty()) {
        auto err = Napi::Error::New(env, p->error);
        err.Set("code", Napi::String::New(env, "EPS_STREAM_FAILED"));
        p->deferred.Reject(err.Value());
      } else if (p->bytes) {
        auto buf = Napi::ArrayBuffer::New(env, p->bytes->size());
        if (!p->bytes->empty()) std::memcpy(buf.Data(), p->bytes->data(), p->bytes->size());
        p->deferred.Resolve(buf);
      } else {
        p->deferred.Resolve(env.Undefined());
      }
      delete p;
    });
    tsfn.Release();
  });
  return promise;
}

// ---------------------------------------------------------------- Device

Napi::Function DeviceWrap::Init(Napi::Env env) {
  auto fn = DefineClass(env, "NativeDevice",
                        {InstanceMethod("alloc", &DeviceWrap::Alloc),
                         InstanceMethod("createStream", &DeviceWrap::CreateStream),
                         InstanceMethod("createEvent", &DeviceWrap::CreateEvent),
                         InstanceMethod("freeBytes", &DeviceWrap::FreeBytes),
                         InstanceMethod("memoryCounters", &DeviceWrap::MemoryCounters),
                         InstanceMethod("opNames", &DeviceWrap::OpNames),
                         InstanceMethod("op", &DeviceWrap::Op),
                         InstanceMethod("dispose", &DeviceWrap::Dispose)});
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

DeviceWrap::DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
  auto ext = info[0].As<Napi::External<std::shared_ptr<Backend>>>();
  backend = *ext.Data();
  info.This().As<Napi::Object>().Set("backend", Napi::String::New(info.Env(), backend->kind()));
  info.This().As<Napi::Object>().Set("index", Napi::Number::New(info.Env(), backend->deviceIndex()));
  info.This().As<Napi::Object>().Set("name", Napi::String::New(info.Env(), backend->deviceName()));
  auto strings = [&](const std::vector<std::string>& names) {
    auto arr = Napi::Array::New(info.Env(), names.size());
    for (size_t i = 0; i < names.size(); ++i) arr.Set(i, Napi::String::New(info.Env(), names[i]));
    return arr;
  };
  info.This().As<Napi::Object>().Set("expertKernels", strings(backend->expertKernels()));
  info.This().As<Napi::Object>().Set("attentionKernels", strings(backend->attentionKernels()));
}

Napi::Value DeviceWrap::Alloc(const Napi::CallbackInfo& info) {
  return guarded(info, "alloc", [&]() -> Napi::Value {
    if (!backend) throw std::invalid_argument("the device was disposed");
    DType dt = parseDType(info[0].As<Napi::String>().Utf8Value());
    auto shape = toShape(info[1], "alloc");
    size_t bytes = static_cast<size_t>(numelOf(shape)) * dtypeSize(dt);
    auto storage = backend->alloc(bytes);
    auto obj = TensorWrap::constructor->New({});
    auto* t = TensorWrap::Unwrap(obj);
    t->backend = backend;
    t->cell = std::make_shared<std::shared_ptr<Storage>>(storage);
    t->owner = true;
    t->dtype = dt;
    t->shape = shape;
    if (backend->kind() == "cpu" && bytes > 0) {
      t->trackedBytes = static_cast<int64_t>(bytes);
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), t->trackedBytes);
    }
    return obj;
  });
}

Napi::Value DeviceWrap::CreateStream(const Napi::CallbackInfo& info) {
  return guarded(info, "createStream", [&]() -> Napi::Value {
    if (!backend) throw std::invalid_argument("the device was disposed");
    auto obj = StreamWrap::constructor->New({});
    auto* s = StreamWrap::Unwrap(obj);
    s->backend = backend;
    s->stream = backend->createStream(info.Length() > 0 && info[0].ToBoolean().Value());
    return obj;
  });
}

Napi::Value DeviceWrap::CreateEvent(const Napi::CallbackInfo& info) {
  return guarded(info, "createEvent", [&]() -> Napi::Value {
    if (!backend) throw std::invalid_argument("the device was disposed");
    auto obj = EventWrap::constructor->New({});
    auto* e = EventWrap::Unwrap(obj);
    e->backend = backend;
    e->event = backend->createEvent();
    return obj;
  });
}

Napi::Value DeviceWrap::FreeBytes(const Napi::CallbackInfo& info) {
  return guarded(info, "freeBytes", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), backend ? static_cast<double>(backend->freeBytes()) : 0.0);
  });
}

Napi::Value DeviceWrap::MemoryCounters(const Napi::CallbackInfo& info) {
  return guarded(info, "memoryCounters", [&]() -> Napi::Value {
    if (!backend) throw std::invalid_argument("the device was disposed");
    const eps::MemoryCounters m = backend->memoryCounters();
    auto obj = Napi::Object::New(info.Env());
    obj.Set("allocations", m.allocations);
    obj.Set("allocatedBytes", m.allocatedBytes);
    obj.Set("allocateMs", m.allocateMs);
    obj.Set("outOfMemoryFlushes", m.outOfMemoryFlushes);
    obj.Set("reservedBytes", m.reservedBytes);
    obj.Set("cachedBytes", m.cachedBytes);
    return obj;
  });
}

Napi::Value DeviceWrap::OpNames(const Napi::CallbackInfo& info) {
  return guarded(info, "opNames", [&]() -> Napi::Value {
    auto names = backend->opNames();
    auto arr = Napi::Array::New(info.Env(), names.size());
    for (size_t i = 0; i < names.size(); ++i) arr.Set(i, Napi::String::New(info.Env(), names[i]));
    return arr;
  });
}

Napi::Value DeviceWrap::Op(const Napi::CallbackInfo& info) {
  std::string name = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : std::string("op");
  return guarded(info, name.c_str(), [&]() -> Napi::Value {
    if (!backend) throw std::invalid_argument("the device was disposed");
    auto* stream = unwrapAs<StreamWrap>(info[0], "stream");
    if (stream->backend != backend) throw std::invalid_argument("the stream belongs to another device");
    OpArgs args;
    args.name = name;
    auto tensors = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < tensors.Length(); ++i) {
      Napi::Value v = tensors.Get(i);
      if (v.IsNull() || v.IsUndefined()) {
        args.tensors.emplace_back();
        continue;
      }
      auto* t = unwrapAs<TensorWrap>(v, ("tensor " + std::to_string(i)).c_str());
      if (t->backend != backend) throw std::invalid_argument("tensor " + std::to_string(i) + " lives on another device");
      args.tensors.push_back(t->ref(("tensor " + std::to_string(i)).c_str()));
      args.keepAlive.push_back(t->storage());
    }
    auto params = info[3].As<Napi::Array>();
    for (uint32_t i = 0; i < params.Length(); ++i) args.params.push_back(params.Get(i).As<Napi::Number>().DoubleValue());
    auto ints = info[4].As<Napi::Array>();
    for (uint32_t i = 0; i < ints.Length(); ++i) args.ints.push_back(ints.Get(i).As<Napi::Number>().Int64Value());
    try {
      checkOp(args);
    } catch (const std::invalid_argument& e) {
      throw toJsError(info.Env(), "", e);  // checkOp's message already starts with the op's name
    }
    backend->op(*stream->stream, std::move(args));
    return info.Env().Undefined();
  });
}

Napi::Value DeviceWrap::Dispose(const Napi::CallbackInfo& info) {
  backend.reset();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- Tensor

Napi::Function TensorWrap::Init(Napi::Env env) {
  auto fn = DefineClass(env, "NativeTensor",
                        {InstanceAccessor("dtype", &TensorWrap::GetDtype, nullptr),
                         InstanceAccessor("shape", &TensorWrap::GetShape, nullptr),
                         InstanceAccessor("byteLength", &TensorWrap::GetByteLength, nullptr),
                         InstanceMethod("view", &TensorWrap::View),
                         InstanceMethod("upload", &TensorWrap::Upload),
                         InstanceMethod("download", &TensorWrap::Download),
                         InstanceMethod("dispose", &TensorWrap::Dispose)});
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {}

TensorWrap::~TensorWrap() {
  if (trackedBytes > 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -trackedBytes);
}

size_t TensorWrap::byteLength() const { return static_cast<size_t>(numelOf(shape)) * dtypeSize(dtype); }

const std::shared_ptr<Storage>& TensorWrap::storage() const {
  static const std::shared_ptr<Storage> none;
  return cell ? *cell : none;
}

TensorRef TensorWrap::ref(const char* what) const {
  const auto& storage = this->storage();
  if (!storage) throw std::invalid_argument(std::string(what) + " was disposed");
  TensorRef r;
  r.data = static_cast<uint8_t*>(storage->data) + byteOffset;
  r.dtype = dtype;
  r.shape = shape;
  return r;
}

Napi::Value TensorWrap::GetDtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtypeName(dtype)); }
Napi::Value TensorWrap::GetShape(const Napi::CallbackInfo& info) { return fromShape(info.Env(), shape); }
Napi::Value TensorWrap::GetByteLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(byteLength()));
}

Napi::Value TensorWrap::View(const Napi::CallbackInfo& info) {
  return guarded(info, "view", [&]() -> Napi::Value {
    if (!storage()) throw std::invalid_argument("the tensor was disposed");
    double off = info[0].As<Napi::Number>().DoubleValue();
    auto newShape = toShape(info[1], "view");
    if (off < 0) throw std::invalid_argument("offset must be >= 0");
    size_t newOffset = byteOffset + static_cast<size_t>(off) * dtypeSize(dtype);
    size_t newBytes = static_cast<size_t>(numelOf(newShape)) * dtypeSize(dtype);
    if (newOffset + newBytes > byteOffset + byteLength())
      throw std::invalid_argument("the view reaches past the end of the tensor");
    auto obj = constructor->New({});
    auto* t = Unwrap(obj);
    t->backend = backend;
    t->cell = cell;
    t->byteOffset = newOffset;
    t->dtype = dtype;
    t->shape = newShape;
    return obj;
  });
}

Napi::Value TensorWrap::Upload(const Napi::CallbackInfo& info) {
  return guarded(info, "upload", [&]() -> Napi::Value {
    const auto& storage = this->storage();
    if (!storage) throw std::invalid_argument("the tensor was disposed");
    auto* stream = unwrapAs<StreamWrap>(info[0], "stream");
    if (!info[1].IsTypedArray()) throw std::invalid_argument("data must be a Uint8Array");
    auto arr = info[1].As<Napi::Uint8Array>();
    if (arr.ByteLength() != byteLength())
      throw std::invalid_argument("data has " + std::to_string(arr.ByteLength()) + " bytes, the tensor " +
                                  std::to_string(byteLength()));
    auto bytes = std::make_shared<std::vector<uint8_t>>(arr.Data(), arr.Data() + arr.ByteLength());
    backend->upload(stream->get("upload"), storage, byteOffset, bytes);
    return info.Env().Undefined();
  });
}

Napi::Value TensorWrap::Download(const Napi::CallbackInfo& info) {
  return guarded(info, "download", [&]() -> Napi::Value {
    const auto& storage = this->storage();
    if (!storage) throw std::invalid_argument("the tensor was disposed");
    auto* stream = unwrapAs<StreamWrap>(info[0], "stream");
    auto bytes = std::make_shared<std::vector<uint8_t>>(byteLength());
    auto be = backend;
    auto st = stream->stream;
    auto src = storage;
    size_t off = byteOffset;
    return whenReached(info.Env(), [be, st, src, off, bytes](HostCallback done) {
      be->download(*st, src, off, bytes, std::move(done));
    }, bytes);
  });
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  if (owner && cell) cell->reset();
  cell.reset();
  if (trackedBytes > 0) {
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -trackedBytes);
    trackedBytes = 0;
  }
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- Stream

Napi::Function StreamWrap::Init(Napi::Env env) {
  auto fn = DefineClass(env, "NativeStream",
                        {InstanceMethod("record", &StreamWrap::Record), InstanceMethod("wait", &StreamWrap::Wait),
                         InstanceMethod("synchronize", &StreamWrap::Synchronize),
                         InstanceMethod("dispose", &StreamWrap::Dispose)});
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

StreamWrap::StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {}

Stream& StreamWrap::get(const char* what) const {
  if (!stream) throw std::invalid_argument(std::string(what) + ": the stream was disposed");
  return *stream;
}

Napi::Value StreamWrap::Record(const Napi::CallbackInfo& info) {
  return guarded(info, "record", [&]() -> Napi::Value {
    auto* e = unwrapAs<EventWrap>(info[0], "event");
    if (e->backend != backend) throw std::invalid_argument("the event belongs to another device");
    backend->record(get("record"), e->get("record"));
    return info.Env().Undefined();
  });
}

Napi::Value StreamWrap::Wait(const Napi::CallbackInfo& info) {
  return guarded(info, "wait", [&]() -> Napi::Value {
    auto* e = unwrapAs<EventWrap>(info[0], "event");
    if (e->backend != backend) throw std::invalid_argument("the event belongs to another device");
    backend->wait(get("wait"), e->get("wait"));
    return info.Env().Undefined();
  });
}

Napi::Value StreamWrap::Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info, "synchronize", [&]() -> Napi::Value {
    auto be = backend;
    auto st = stream;
    get("synchronize");
    return whenReached(info.Env(), [be, st](HostCallback done) { be->enqueueHost(*st, std::move(done)); }, nullptr);
  });
}

Napi::Value StreamWrap::Dispose(const Napi::CallbackInfo& info) {
  // The backend keeps the stream alive until its queued work has run (the CPU worker drains first).
  stream.reset();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- Event

Napi::Function EventWrap::Init(Napi::Env env) {
  auto fn = DefineClass(env, "NativeEvent",
                        {InstanceMethod("elapsedSince", &EventWrap::ElapsedSince),
                         InstanceMethod("dispose", &EventWrap::Dispose)});
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

EventWrap::EventWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventWrap>(info) {}

Event& EventWrap::get(const char* what) const {
  if (!event) throw std::invalid_argument(std::string(what) + ": the event was disposed");
  return *event;
}

Napi::Value EventWrap::ElapsedSince(const Napi::CallbackInfo& info) {
  return guarded(info, "elapsedSince", [&]() -> Napi::Value {
    auto* start = unwrapAs<EventWrap>(info[0], "start");
    return Napi::Number::New(info.Env(), backend->elapsedMs(start->get("elapsedSince"), get("elapsedSince")));
  });
}

Napi::Value EventWrap::Dispose(const Napi::CallbackInfo& info) {
  event.reset();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- module

namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  auto arr = Napi::Array::New(info.Env());
  arr.Set(0u, Napi::String::New(info.Env(), "cpu"));
#ifdef EPS_WITH_CUDA
  if (cudaDeviceCount() > 0) arr.Set(1u, Napi::String::New(info.Env(), "cuda"));
#endif
  return arr;
}

Napi::Value Devices(const Napi::CallbackInfo& info) {
  return guarded(info, "devices", [&]() -> Napi::Value {
    std::string kind = info[0].As<Napi::String>().Utf8Value();
    auto arr = Napi::Array::New(info.Env());
    auto describe = [&](uint32_t slot, const std::shared_ptr<Backend>& b, double total) {
      auto o = Napi::Object::New(info.Env());
      o.Set("backend", kind);
      o.Set("index", b->deviceIndex());
      o.Set("name", b->deviceName());
      o.Set("totalBytes", total);
      arr.Set(slot, o);
    };
    if (kind == "cpu") describe(0, sharedBackend("cpu", 0), 0);
#ifdef EPS_WITH_CUDA
    if (kind == "cuda") {
      int n = cudaDeviceCount();
      for (int i = 0; i < n; ++i) describe(i, sharedBackend("cuda", i), static_cast<double>(cudaTotalBytes(i)));
    }
#endif
    return arr;
  });
}

Napi::Value OpenDevice(const Napi::CallbackInfo& info) {
  return guarded(info, "openDevice", [&]() -> Napi::Value {
    std::string kind = info[0].As<Napi::String>().Utf8Value();
    int index = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
    auto backend = sharedBackend(kind, index);
    return DeviceWrap::constructor->New({Napi::External<std::shared_ptr<Backend>>::New(
        info.Env(), new std::shared_ptr<Backend>(backend),
        [](Napi::Env, std::shared_ptr<Backend>* p) { delete p; })});
  });
}

Napi::Value Versions(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("napi", Napi::String::New(info.Env(), std::to_string(NAPI_VERSION)));
#ifdef EPS_WITH_CUDA
  for (const auto& [k, v] : cudaVersions()) o.Set(k, Napi::String::New(info.Env(), v));
#endif
  return o;
}

// The op table of opcheck.h, for test/opTable.test.ts: [{name, tensors: [{name, dtype, optional}],
// params: [{name, kind, values?}], ints: [{name, optional}]}].
Napi::Value OpTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto list = [&](const auto& items, auto&& describe) {
    auto arr = Napi::Array::New(env, items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      auto o = Napi::Object::New(env);
      describe(o, items[i]);
      arr.Set(uint32_t(i), o);
    }
    return arr;
  };
  return list(opTable(), [&](Napi::Object& op, const OpSpec& spec) {
    op.Set("name", spec.name);
    op.Set("tensors", list(spec.tensors, [](Napi::Object& o, const TensorSpec& t) {
      o.Set("name", t.name);
      o.Set("dtype", tensorKindName(t.kind));
      o.Set("optional", t.optional);
    }));
    op.Set("params", list(spec.params, [&](Napi::Object& o, const ParamSpec& p) {
      o.Set("name", p.name);
      o.Set("kind", paramKindName(p.kind));
      if (p.kind == ParamKind::Enum) {
        auto values = Napi::Array::New(env, p.values.size());
        for (size_t v = 0; v < p.values.size(); ++v) values.Set(uint32_t(v), p.values[v]);
        o.Set("values", values);
      }
    }));
    op.Set("ints", list(spec.ints, [](Napi::Object& o, const IntsSpec& i) {
      o.Set("name", i.name);
      o.Set("optional", i.optional);
    }));
  });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeDevice", DeviceWrap::Init(env));
  exports.Set("NativeTensor", TensorWrap::Init(env));
  exports.Set("NativeStream", StreamWrap::Init(env));
  exports.Set("NativeEvent", EventWrap::Init(env));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("devices", Napi::Function::New(env, Devices));
  exports.Set("openDevice", Napi::Function::New(env, OpenDevice));
  exports.Set("versions", Napi::Function::New(env, Versions));
  exports.Set("opTable", Napi::Function::New(env, OpTable));
#ifdef EPS_WITH_CUDA
  registerNccl(env, exports);
#endif
  return exports;
}

}  // namespace eps::js

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return eps::js::Init(env, exports); }
NODE_API_MODULE(eps_native, InitAddon)
