// PyTorch's own distributed engine (c10d) for stacklab's data-parallel training: a TCPStore
// rendezvous, a process group (Gloo here; NCCL from csrc/dist_nccl.cpp, a shared object
// loaded at run time so that this file never needs libtorch_cuda), and the collectives the
// training uses, each waited for with the group's timeout.
//
// Every entry point catches what libtorch throws and returns it as a message in `err`, so
// nothing unwinds into Rust. Gloo's headers are not shipped with the libtorch wheel: where
// build.rs did not find them, USE_C10D_GLOO is undefined and a Gloo group is refused with a
// message saying so.
#include "dist_common.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace stacklab_dist;

namespace {

struct Pending {
  std::vector<WorkPtr> works;
  std::chrono::milliseconds timeout;
};

std::vector<at::Tensor> tensors_of(at::Tensor** ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(*ts[i]);
  }
  return out;
}

}  // namespace

extern "C" {

int stacklab_dist_has_gloo() {
#ifdef USE_C10D_GLOO
  return 1;
#else
  return 0;
#endif
}

// A TCPStore at host:port (the server when `is_server`, which waits for `world` clients),
// seen through `prefix` when it is not empty. Returns a handle or null with `err` set.
void* stacklab_dist_store(const char* host, int port, int is_server, int world,
                          int64_t timeout_ms, const char* prefix, char* err, size_t len) {
  StorePtr* out = nullptr;
  guarded(err, len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    StorePtr store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    if (prefix != nullptr && prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    out = new StorePtr(store);
  });
  return out;
}

void stacklab_dist_store_free(void* store) {
  delete static_cast<StorePtr*>(store);
}

// Sets `key` to `n` bytes in the store.
int stacklab_dist_store_set(void* store, const char* key, const uint8_t* data, size_t n,
                            char* err, size_t len) {
  return guarded(err, len, [&] {
    std::vector<uint8_t> value(data, data + n);
    (*static_cast<StorePtr*>(store))->set(std::string(key), value);
  });
}

// Waits up to `timeout_ms` for `key` and returns its bytes in a malloc'ed buffer (the
// caller frees it with free()).
int stacklab_dist_store_get(void* store, const char* key, int64_t timeout_ms, uint8_t** data,
                            size_t* n, char* err, size_t len) {
  return guarded(err, len, [&] {
    const StorePtr& s = *static_cast<StorePtr*>(store);
    s->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
    std::vector<uint8_t> value = s->get(std::string(key));
    *n = value.size();
    *data = static_cast<uint8_t*>(std::malloc(value.size() + 1));
    if (*data == nullptr) {
      throw std::runtime_error("out of host memory");
    }
    std::memcpy(*data, value.data(), value.size());
  });
}

// A Gloo group over `store`. Its device binds to `iface` when given, else to `host`, else to
// the machine's hostname (Gloo's default).
void* stacklab_dist_gloo(void* store, int rank, int world, int64_t timeout_ms,
                         const char* iface, const char* host, char* err, size_t len) {
  Group* out = nullptr;
  guarded(err, len, [&] {
#ifdef USE_C10D_GLOO
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (host != nullptr && host[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    const StorePtr& s = *static_cast<StorePtr*>(store);
    BackendPtr pg = c10::make_intrusive<c10d::ProcessGroupGloo>(s, rank, world, opts);
    out = new Group{s, pg, timeout};
#else
    (void)store;
    (void)rank;
    (void)world;
    (void)timeout_ms;
    (void)iface;
    (void)host;
    throw std::runtime_error(
        "this build has no Gloo: its headers were not found when it was compiled "
        "(install libgloo-dev and rebuild)");
#endif
  });
  return out;
}

// A group around a backend made elsewhere (`backend` is a heap `intrusive_ptr<Backend>*`,
// taken over here).
void* stacklab_dist_group_from_backend(void* store, void* backend, int64_t timeout_ms) {
  auto* b = static_cast<BackendPtr*>(backend);
  auto* g = new Group{*static_cast<StorePtr*>(store), *b, std::chrono::milliseconds(timeout_ms)};
  delete b;
  return g;
}

void stacklab_dist_free(void* group) {
  delete static_cast<Group*>(group);
}

// Starts a SUM (op 0) or MAX (op 1) all-reduce of each tensor, in place, one collective per
// tensor, in order; returns a handle to wait for, or null with `err` set.
void* stacklab_dist_allreduce_start(void* group, at::Tensor** ts, int n, int op, char* err,
                                    size_t len) {
  Pending* out = nullptr;
  guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    auto p = std::make_unique<Pending>();
    p->timeout = g->timeout;
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      p->works.push_back(g->backend->allreduce(one, opts));
    }
    out = p.release();
  });
  return out;
}

// Waits for every collective of `pending` (each within the group's timeout) and frees it.
int stacklab_dist_wait(void* pending, char* err, size_t len) {
  std::unique_ptr<Pending> p(static_cast<Pending*>(pending));
  return guarded(err, len, [&] { wait_all(p->works, p->timeout); });
}

int stacklab_dist_broadcast(void* group, at::Tensor** ts, int n, int root, char* err,
                            size_t len) {
  return guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    std::vector<WorkPtr> works;
    for (auto& t : tensors_of(ts, n)) {
      std::vector<at::Tensor> one{t};
      works.push_back(g->backend->broadcast(one, opts));
    }
    wait_all(works, g->timeout);
  });
}

int stacklab_dist_barrier(void* group, int device_index, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    if (device_index >= 0) {
      opts.device_ids = {device_index};
    }
    wait_all({g->backend->barrier(opts)}, g->timeout);
  });
}

}  // extern "C"
