// NCCL for the addon: exports ncclUniqueId() and the class NcclComm(device, uniqueId, world, rank)
// with allToAll(stream, send, sendRows, recv, recvRows), allGather(Int32Array) and dispose().
//
// The unique id is 128 bytes that TypeScript carries between processes (rank 0 makes it, the
// rendezvous hands it out); every rank then constructs its NcclComm with it, which blocks until all
// `world` ranks have joined.
//
// NCCL requires that all ranks issue a communicator's operations in the same order, and that
// those operations also run in that order on each GPU. allToAll runs on the caller's stream and
// allGather on a stream of the communicator's own, so each operation first waits for an event
// recorded after the previous one: GPU order = issue order, whatever streams are involved.
#include <napi.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <vector>

#include "../binding.h"
#include "../cuda/cuda_check.h"
#include "../cuda/stream.h"

namespace eps::js {
namespace {

void checkNccl(ncclResult_t r, const char* call) {
  if (r != ncclSuccess) throw cuda::CudaError(std::string(call) + ": " + ncclGetErrorString(r));
}

cuda::CudaStream& cudaStreamOf(const std::shared_ptr<Stream>& s, const char* what) {
  auto* cs = s ? dynamic_cast<cuda::CudaStream*>(s.get()) : nullptr;
  if (!cs) throw std::invalid_argument(std::string(what) + ": not a CUDA stream (or disposed)");
  return *cs;
}

// Bytes of one row (all dims but the first) of a tensor.
size_t rowBytesOf(const TensorWrap& t) {
  size_t n = dtypeSize(t.dtype);
  for (size_t d = 1; d < t.shape.size(); ++d) n *= size_t(t.shape[d]);
  return n;
}

std::vector<int64_t> rowCounts(const Napi::Value& v, const char* what, int world) {
  if (!v.IsArray()) throw std::invalid_argument(std::string(what) + " must be an array of " + std::to_string(world) + " row counts");
  auto arr = v.As<Napi::Array>();
  if (int(arr.Length()) != world)
    throw std::invalid_argument(std::string(what) + " must hold one count per rank (" + std::to_string(world) + "); got " +
                                std::to_string(arr.Length()));
  std::vector<int64_t> counts(world);
  for (int p = 0; p < world; ++p) {
    Napi::Value c = arr.Get(uint32_t(p));
    const double x = c.IsNumber() ? c.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(x >= 0) || x != double(int64_t(x)))
      throw std::invalid_argument(std::string(what) + "[" + std::to_string(p) + "] must be a non-negative integer");
    counts[p] = int64_t(x);
  }
  return counts;
}

// A pinned staging slot of one allGather: what this rank sends and what it receives, on the host
// (pinned, so the copies are async) and on the device. Reused once a gather has been read out.
struct GatherSlot {
  size_t capacity = 0;  // int32 values per rank
  int32_t* hostSend = nullptr;
  int32_t* hostRecv = nullptr;
  int32_t* devSend = nullptr;
  int32_t* devRecv = nullptr;
  bool busy = false;
};

struct CommState {
  std::shared_ptr<Backend> backend;
  int device = 0, world = 0, rank = 0;
  ncclComm_t comm = nullptr;
  std::mutex mu;                       // NCCL calls of this communicator, slots, lastOp
  cudaEvent_t lastOp = nullptr;        // recorded after every operation
  std::shared_ptr<Stream> gatherStream;
  std::vector<std::unique_ptr<GatherSlot>> slots;

  ~CommState() { close(); }

  void close() {
    if (!comm) return;
    cudaSetDevice(device);
    ncclCommDestroy(comm);  // waits for this communicator's queued operations
    comm = nullptr;
    gatherStream.reset();
    cudaDeviceSynchronize();
    for (auto& s : slots) {
      cudaFreeHost(s->hostSend);
      cudaFreeHost(s->hostRecv);
      cudaFree(s->devSend);
      cudaFree(s->devRecv);
    }
    slots.clear();
    if (lastOp) cudaEventDestroy(lastOp);
    lastOp = nullptr;
  }

  GatherSlot& slotFor(size_t count) {
    for (auto& s : slots)
      if (!s->busy && s->capacity >= count) return *s;
    auto slot = std::make_unique<GatherSlot>();
    slot->capacity = std::max<size_t>(count, 256);
    const size_t sendBytes = slot->capacity * sizeof(int32_t), recvBytes = sendBytes * size_t(world);
    cuda::checkCuda(cudaHostAlloc(reinterpret_cast<void**>(&slot->hostSend), sendBytes, cudaHostAllocPortable), "cudaHostAlloc(allGather)");
    cuda::checkCuda(cudaHostAlloc(reinterpret_cast<void**>(&slot->hostRecv), recvBytes, cudaHostAllocPortable), "cudaHostAlloc(allGather)");
    cuda::checkCuda(cudaMalloc(reinterpret_cast<void**>(&slot->devSend), sendBytes), "cudaMalloc(allGather)");
    cuda::checkCuda(cudaMalloc(reinterpret_cast<void**>(&slot->devRecv), recvBytes), "cudaMalloc(allGather)");
    slots.push_back(std::move(slot));
    return *slots.back();
  }

  // The operation about to be enqueued on `s` runs after the previous one.
  void orderAfterPrevious(cudaStream_t s) { cuda::checkCuda(cudaStreamWaitEvent(s, lastOp, 0), "cudaStreamWaitEvent(nccl order)"); }
  void markLast(cudaStream_t s) { cuda::checkCuda(cudaEventRecord(lastOp, s), "cudaEventRecord(nccl order)"); }
};

// Copies a finished gather out of its pinned slot (on CUDA's callback thread: host memory only).
// The state outlives the callback: it is closed (which waits for the device) before it goes.
struct GatherCopy {
  CommState* state;
  GatherSlot* slot;
  std::shared_ptr<std::vector<uint8_t>> bytes;
};

void CUDART_CB gatherCopyOut(void* data) {
  std::unique_ptr<GatherCopy> c(static_cast<GatherCopy*>(data));
  std::memcpy(c->bytes->data(), c->slot->hostRecv, c->bytes->size());
  std::lock_guard<std::mutex> lock(c->state->mu);
  c->slot->busy = false;
}

class NcclCommWrap : public Napi::ObjectWrap<NcclCommWrap> {
 public:
  static Napi::FunctionReference* constructor;

  static Napi::Function Init(Napi::Env env) {
    auto fn = DefineClass(env, "NcclComm",
                          {InstanceMethod("allToAll", &NcclCommWrap::AllToAll),
                           InstanceMethod("allGather", &NcclCommWrap::AllGather),
                           InstanceMethod("dispose", &NcclCommWrap::Dispose),
                           InstanceAccessor("rank", &NcclCommWrap::GetRank, nullptr),
                           InstanceAccessor("world", &NcclCommWrap::GetWorld, nullptr)});
    constructor = new Napi::FunctionReference(Napi::Persistent(fn));
    return fn;
  }

  // new NcclComm(device: NativeDevice (cuda), uniqueId: Uint8Array(128), world, rank)
  explicit NcclCommWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NcclCommWrap>(info) {
    try {
      auto* dev = unwrapAs<DeviceWrap>(info[0], "device");
      if (!dev->backend || dev->backend->kind() != "cuda") throw std::invalid_argument("device must be an open CUDA device");
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
        throw std::invalid_argument("uniqueId must be a Uint8Array");
      auto idBytes = info[1].As<Napi::Uint8Array>();
      if (idBytes.ByteLength() != NCCL_UNIQUE_ID_BYTES)
        throw std::invalid_argument("uniqueId must hold " + std::to_string(NCCL_UNIQUE_ID_BYTES) + " bytes; got " +
                                    std::to_string(idBytes.ByteLength()));
      const int world = info[2].As<Napi::Number>().Int32Value();
      const int rank = info[3].As<Napi::Number>().Int32Value();
      if (world < 1 || rank < 0 || rank >= world)
        throw std::invalid_argument("rank " + std::to_string(rank) + " of world " + std::to_string(world) + " is not a rank");
      ncclUniqueId id;
      std::memcpy(&id, idBytes.Data(), NCCL_UNIQUE_ID_BYTES);

      state_ = std::make_shared<CommState>();
      state_->backend = dev->backend;
      state_->device = dev->backend->deviceIndex();
      state_->world = world;
      state_->rank = rank;
      cuda::checkCuda(cudaSetDevice(state_->device), "cudaSetDevice(nccl)");
      cuda::checkCuda(cudaEventCreateWithFlags(&state_->lastOp, cudaEventDisableTiming), "cudaEventCreateWithFlags(nccl)");
      state_->gatherStream = dev->backend->createStream(true);  // the layer's counts: never behind GEMMs
      checkNccl(ncclCommInitRank(&state_->comm, world, id, rank), "ncclCommInitRank");
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw toJsError(info.Env(), "NcclComm", e);
    }
  }

  // A communicator JS dropped without dispose(): close it here, on the JS thread, waiting for its
  // work (never from a CUDA callback thread, where the last reference might otherwise drop).
  ~NcclCommWrap() override {
    if (state_) state_->close();
  }

 private:
  CommState& live(const char* what) {
    if (!state_ || !state_->comm) throw std::invalid_argument(std::string(what) + ": the communicator was disposed");
    return *state_;
  }

  Napi::Value GetRank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state_ ? state_->rank : -1); }
  Napi::Value GetWorld(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state_ ? state_->world : 0); }

  // allToAll(stream, send, sendRows[world], recv, recvRows[world]): rows for peer p are the
  // sendRows[p] rows after those of peers < p; likewise recv. Enqueued on `stream`; returns at once.
  Napi::Value AllToAll(const Napi::CallbackInfo& info) {
    try {
      CommState& st = live("allToAll");
      auto* streamWrap = unwrapAs<StreamWrap>(info[0], "stream");
      if (streamWrap->backend != st.backend) throw std::invalid_argument("allToAll: the stream belongs to another device");
      cuda::CudaStream& stream = cudaStreamOf(streamWrap->stream, "allToAll: stream");
      auto* send = unwrapAs<TensorWrap>(info[1], "send");
      auto* recv = unwrapAs<TensorWrap>(info[3], "recv");
      if (send->backend != st.backend || recv->backend != st.backend)
        throw std::invalid_argument("allToAll: send and recv must live on the communicator's device");
      const auto sendRows = rowCounts(info[2], "sendRows", st.world);
      const auto recvRows = rowCounts(info[4], "recvRows", st.world);
      const TensorRef sendRef = send->ref("allToAll: send"), recvRef = recv->ref("allToAll: recv");
      const size_t rowBytes = rowBytesOf(*send);
      if (rowBytesOf(*recv) != rowBytes)
        throw std::invalid_argument("allToAll: send rows hold " + std::to_string(rowBytes) + " bytes, recv rows " +
                                    std::to_string(rowBytesOf(*recv)));
      const int64_t sendTotal = std::accumulate(sendRows.begin(), sendRows.end(), int64_t(0));
      const int64_t recvTotal = std::accumulate(recvRows.begin(), recvRows.end(), int64_t(0));
      const int64_t sendHave = send->shape.empty() ? 0 : send->shape[0], recvHave = recv->shape.empty() ? 0 : recv->shape[0];
      if (sendTotal > sendHave)
        throw std::invalid_argument("allToAll: sendRows add up to " + std::to_string(sendTotal) + " rows; send has " + std::to_string(sendHave));
      if (recvTotal > recvHave)
        throw std::invalid_argument("allToAll: recvRows add up to " + std::to_string(recvTotal) + " rows; recv has " + std::to_string(recvHave));
      if (sendRows[st.rank] != recvRows[st.rank])
        throw std::invalid_argument("allToAll: this rank sends itself " + std::to_string(sendRows[st.rank]) + " rows but receives " +
                                    std::to_string(recvRows[st.rank]));

      std::lock_guard<std::mutex> lock(st.mu);
      cuda::checkCuda(cudaSetDevice(st.device), "cudaSetDevice(allToAll)");
      const cudaStream_t s = stream.handle();
      st.orderAfterPrevious(s);
      auto* sendBase = static_cast<const uint8_t*>(sendRef.data);
      auto* recvBase = static_cast<uint8_t*>(recvRef.data);
      size_t sendOff = 0, recvOff = 0;
      checkNccl(ncclGroupStart(), "ncclGroupStart");
      try {
        for (int p = 0; p < st.world; ++p) {
          const size_t sendBytes = size_t(sendRows[p]) * rowBytes, recvBytes = size_t(recvRows[p]) * rowBytes;
          if (p == st.rank) {
            if (sendBytes > 0)
              cuda::checkCuda(cudaMemcpyAsync(recvBase + recvOff, sendBase + sendOff, sendBytes, cudaMemcpyDeviceToDevice, s),
                              "cudaMemcpyAsync(allToAll self)");
          } else {
            if (sendBytes > 0) checkNccl(ncclSend(sendBase + sendOff, sendBytes, ncclUint8, p, st.comm, s), "ncclSend");
            if (recvBytes > 0) checkNccl(ncclRecv(recvBase + recvOff, recvBytes, ncclUint8, p, st.comm, s), "ncclRecv");
          }
          sendOff += sendBytes;
          recvOff += recvBytes;
        }
      } catch (...) {
        ncclGroupEnd();
        throw;
      }
      checkNccl(ncclGroupEnd(), "ncclGroupEnd(allToAll)");
      st.markLast(s);
      return info.Env().Undefined();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw toJsError(info.Env(), "allToAll", e);
    }
  }

  // allGather(local: Int32Array) -> Promise<ArrayBuffer> of world * local.length int32 values, rank
  // order. Enqueued now (so the issue order is the caller's), resolved when done.
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    try {
      CommState& st = live("allGather");
      if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw std::invalid_argument("allGather: local must be an Int32Array");
      auto local = info[0].As<Napi::Int32Array>();
      const size_t count = local.ElementLength();
      auto bytes = std::make_shared<std::vector<uint8_t>>(count * sizeof(int32_t) * size_t(st.world));
      cuda::CudaStream& gs = cudaStreamOf(st.gatherStream, "allGather");
      {
        std::lock_guard<std::mutex> lock(st.mu);
        cuda::checkCuda(cudaSetDevice(st.device), "cudaSetDevice(allGather)");
        GatherSlot& slot = st.slotFor(count);
        slot.busy = true;
        const cudaStream_t s = gs.handle();
        try {
          if (count > 0) std::memcpy(slot.hostSend, local.Data(), count * sizeof(int32_t));
          st.orderAfterPrevious(s);
          if (count > 0) {
            cuda::checkCuda(cudaMemcpyAsync(slot.devSend, slot.hostSend, count * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                            "cudaMemcpyAsync(allGather)");
            checkNccl(ncclAllGather(slot.devSend, slot.devRecv, count, ncclInt32, st.comm, s), "ncclAllGather");
            cuda::checkCuda(cudaMemcpyAsync(slot.hostRecv, slot.devRecv, bytes->size(), cudaMemcpyDeviceToHost, s),
                            "cudaMemcpyAsync(allGather)");
          }
          st.markLast(s);
          auto* copy = new GatherCopy{&st, &slot, bytes};
          cudaError_t launched = cudaLaunchHostFunc(s, gatherCopyOut, copy);
          if (launched != cudaSuccess) {
            delete copy;
            cuda::checkCuda(launched, "cudaLaunchHostFunc(allGather)");
          }
        } catch (...) {
          slot.busy = false;
          throw;
        }
      }
      auto backend = st.backend;
      auto gatherStream = st.gatherStream;
      return whenReached(info.Env(), [backend, gatherStream](HostCallback done) {
        backend->enqueueHost(*gatherStream, std::move(done));
      }, bytes);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw toJsError(info.Env(), "allGather", e);
    }
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    try {
      if (state_) state_->close();
      state_.reset();
      return info.Env().Undefined();
    } catch (const std::exception& e) {
      throw toJsError(info.Env(), "dispose", e);
    }
  }

  std::shared_ptr<CommState> state_;
};

Napi::FunctionReference* NcclCommWrap::constructor = nullptr;

Napi::Value NcclUniqueId(const Napi::CallbackInfo& info) {
  try {
    ncclUniqueId id;
    checkNccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    auto out = Napi::Uint8Array::New(info.Env(), NCCL_UNIQUE_ID_BYTES);
    std::memcpy(out.Data(), &id, NCCL_UNIQUE_ID_BYTES);
    return out;
  } catch (const std::exception& e) {
    throw toJsError(info.Env(), "ncclUniqueId", e);
  }
}

}  // namespace

void registerNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueId));
  exports.Set("NcclComm", NcclCommWrap::Init(env));
}

}  // namespace eps::js
