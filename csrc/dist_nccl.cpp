// c10d's NCCL backend for stacklab, built by build.rs into a shared object of its own when
// the NCCL and CUDA headers are found. ProcessGroupNCCL lives in libtorch_cuda, which the
// main binary does not link (a CPU-only libtorch has none), so this object is loaded at run
// time, after libtorch_cuda, and hands csrc/dist.cpp a backend to wrap.
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

namespace {

void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) {
    return;
  }
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

}  // namespace

extern "C" {

// An NCCL backend of `world` ranks over `store` (a heap `intrusive_ptr<Store>*`), this
// process being `rank` on CUDA device `device` (made the current device). Returns a heap
// `intrusive_ptr<Backend>*`, or null with `err` set.
void* stacklab_nccl_backend(void* store, int rank, int world, int device, int64_t timeout_ms,
                            char* err, size_t len) {
  try {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    const auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    c10::intrusive_ptr<c10d::Backend> pg =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(s, rank, world, opts);
    return new c10::intrusive_ptr<c10d::Backend>(pg);
  } catch (const c10::Error& e) {
    set_error(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return nullptr;
}

}  // extern "C"
