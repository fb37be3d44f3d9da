// The CUDA caching allocator's statistics (what torch.cuda.max_memory_allocated reads), for
// stacklab's memory reports: tch binds none of them. Only c10's device-independent
// allocator interface is used, so this compiles and links against a CPU-only libtorch too;
// where no CUDA allocator is registered or initialised, the call reports failure.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" {

// Fills out[0..4] with the aggregate allocated bytes (current, peak) and reserved bytes
// (current, peak) of CUDA device `device`; returns 0 on success, -1 otherwise.
int stacklab_cuda_allocator_stats(int device, int64_t* out) {
  try {
    c10::Allocator* any = c10::GetAllocator(c10::DeviceType::CUDA);
    auto* allocator = dynamic_cast<c10::DeviceAllocator*>(any);
    if (allocator == nullptr || !allocator->initialized()) {
      return -1;
    }
    const auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[aggregate].current;
    out[1] = stats.allocated_bytes[aggregate].peak;
    out[2] = stats.reserved_bytes[aggregate].current;
    out[3] = stats.reserved_bytes[aggregate].peak;
    return 0;
  } catch (...) {
    return -1;
  }
}

// Fills out[0..2] with the free and total bytes of CUDA device `device` as the CUDA runtime
// sees it (cudaMemGetInfo: a MIG slice's own memory, not its parent GPU's); returns 0 on
// success, -1 otherwise (no CUDA allocator, not initialised, or the call failed).
int stacklab_cuda_memory_info(int device, int64_t* out) {
  try {
    c10::Allocator* any = c10::GetAllocator(c10::DeviceType::CUDA);
    auto* allocator = dynamic_cast<c10::DeviceAllocator*>(any);
    if (allocator == nullptr || !allocator->initialized()) {
      return -1;
    }
    const auto info = allocator->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    out[0] = static_cast<int64_t>(info.first);
    out[1] = static_cast<int64_t>(info.second);
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
