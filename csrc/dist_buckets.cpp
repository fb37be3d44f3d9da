// Gradients all-reduced in flat buckets while backward still runs, as PyTorch's DDP does.
//
// The parameters come in the order backward finishes their gradients (the reverse of their
// first use in the forward pass), cut into buckets. Each parameter's gradient accumulator
// gets a post hook. Once the step's last backward is armed, a hook that finds the last
// missing gradient of a bucket packs the bucket into its flat buffer and starts its
// all-reduce, so communication runs beside the rest of backward. Buckets start strictly in
// order (a bucket that is ready waits for the ones before it): every process then issues
// the same collectives in the same order, whatever its autograd engine's timing.
//
// Nothing throws into the autograd engine: a failure in a hook is kept and reported by the
// next launch or wait. A failure of this process's own (not of a collective) is reported
// with the message starting "[local] "; after any failure the step's state is reset.
#include "dist_common.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

using namespace stacklab_dist;

namespace {

using torch::autograd::Node;
using torch::autograd::variable_list;

struct Bucket {
  at::Tensor flat;
  std::vector<size_t> members;  // indices into Reducer::params
  std::vector<int64_t> offsets;
  size_t missing = 0;  // members whose gradient this armed backward has not finished
  WorkPtr work;
  bool from_hook = false;
};

const char* const LOCAL = "[local] ";

// A failure of this process's own doing, not of a collective.
struct LocalError : std::runtime_error {
  explicit LocalError(const std::string& m) : std::runtime_error(LOCAL + m) {}
};

struct Reducer {
  BackendPtr backend;
  std::chrono::milliseconds timeout;
  std::vector<at::Tensor> params;
  std::vector<int64_t> ids;  // each parameter's number in the caller's list, for messages
  std::vector<size_t> bucket_of;
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<Node>> accumulators;
  std::vector<uintptr_t> hook_keys;

  std::mutex mu;
  bool armed = false;
  std::vector<char> done;  // per parameter, in the armed backward
  size_t next = 0;         // the next bucket to start
  std::string error;

  ~Reducer() {
    for (size_t i = 0; i < accumulators.size(); ++i) {
      accumulators[i]->del_post_hook(hook_keys[i]);
    }
  }

  void start(Bucket& b) {
    for (size_t j = 0; j < b.members.size(); ++j) {
      const at::Tensor& g = params[b.members[j]].grad();
      if (!g.defined()) {
        throw LocalError("parameter #" + std::to_string(ids[b.members[j]]) +
                         " has no gradient to all-reduce");
      }
      b.flat.narrow(0, b.offsets[j], g.numel()).copy_(g.reshape({-1}));
    }
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = timeout;
    std::vector<at::Tensor> one{b.flat};
    b.work = backend->allreduce(one, opts);
  }

  // Starts the buckets from `next` on while they are complete (all of them with `all`).
  void start_in_order(bool all, bool from_hook) {
    while (next < buckets.size() && (all || buckets[next].missing == 0)) {
      Bucket& b = buckets[next];
      start(b);
      b.from_hook = from_hook;
      ++next;
    }
  }

  // A hook: parameter `p`'s gradient is accumulated.
  void finished(size_t p) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed || !error.empty()) {
      return;
    }
    if (done[p]) {
      error = LOCAL + ("parameter #" + std::to_string(ids[p]) +
                       " received its gradient twice in one backward pass; its bucket was "
                       "already sent");
      return;
    }
    done[p] = 1;
    Bucket& b = buckets[bucket_of[p]];
    --b.missing;
    try {
      at::NoGradGuard no_grad;
      start_in_order(false, true);
    } catch (...) {
      error = current_message();
    }
  }

  void arm() {
    std::lock_guard<std::mutex> lock(mu);
    if (next > 0 && error.empty()) {
      error = LOCAL + std::string("the gradient buckets were armed again after some had "
                                  "started this step");
      return;
    }
    armed = true;
    std::fill(done.begin(), done.end(), 0);
    for (auto& b : buckets) {
      b.missing = b.members.size();
    }
  }

  // Forgets the step: after a failure the next step starts clean (what was started is
  // not waited for; c10d keeps its own references to the buffers).
  void reset() {
    armed = false;
    next = 0;
    error.clear();
    for (auto& b : buckets) {
      b.work.reset();
      b.from_hook = false;
    }
  }

  void check() {
    if (!error.empty()) {
      std::string e = error;
      reset();
      throw std::runtime_error(e);
    }
  }

  // Starts every bucket not yet started this step.
  void launch() {
    std::lock_guard<std::mutex> lock(mu);
    armed = false;
    check();
    at::NoGradGuard no_grad;
    try {
      start_in_order(true, false);
    } catch (...) {
      reset();
      throw;
    }
  }

  // Waits for every started bucket and copies the sums back into the gradients; returns
  // how many buckets their hooks started. Stops at the first failure.
  int wait() {
    std::lock_guard<std::mutex> lock(mu);
    armed = false;
    check();
    int from_hooks = 0;
    at::NoGradGuard no_grad;
    try {
      for (auto& b : buckets) {
        if (!b.work) {
          continue;
        }
        from_hooks += b.from_hook ? 1 : 0;
        if (!b.work->wait(timeout)) {
          throw std::runtime_error("a collective did not complete");
        }
        b.work.reset();
        for (size_t j = 0; j < b.members.size(); ++j) {
          at::Tensor g = params[b.members[j]].mutable_grad();
          g.copy_(b.flat.narrow(0, b.offsets[j], g.numel()).view_as(g));
        }
      }
    } catch (...) {
      reset();
      throw;
    }
    reset();
    return from_hooks;
  }
};

// The post hook of one parameter's gradient accumulator.
struct Finished : torch::autograd::FunctionPostHook {
  Reducer* reducer;
  size_t param;
  Finished(Reducer* r, size_t p) : reducer(r), param(p) {}
  variable_list operator()(const variable_list& outputs, const variable_list&) override {
    reducer->finished(param);
    return outputs;
  }
};

}  // namespace

extern "C" {

// Buckets over the `n` parameters `ps` (in the order backward finishes them; `ids` are their
// numbers in the caller's list, for messages): bucket k holds the next `sizes[k]` of them. With `hooks`, armed backward passes start the all-reduces.
// Returns a handle, or null with `err` set.
void* stacklab_dist_buckets_new(void* group, at::Tensor** ps, const int64_t* ids, int n,
                                const int64_t* sizes, int nb, int hooks, char* err,
                                size_t len) {
  Reducer* out = nullptr;
  guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    auto r = std::make_unique<Reducer>();
    r->backend = g->backend;
    r->timeout = g->timeout;
    for (int i = 0; i < n; ++i) {
      r->params.push_back(*ps[i]);
      r->ids.push_back(ids[i]);
    }
    r->done.assign(n, 0);
    r->bucket_of.assign(n, 0);
    size_t p = 0;
    for (int k = 0; k < nb; ++k) {
      Bucket b;
      int64_t numel = 0;
      for (int64_t j = 0; j < sizes[k]; ++j, ++p) {
        if (p >= r->params.size()) {
          throw std::runtime_error("bucket sizes exceed the parameters");
        }
        const at::Tensor& t = r->params[p];
        if (j > 0 && t.scalar_type() != r->params[b.members[0]].scalar_type()) {
          throw std::runtime_error("a bucket mixes dtypes");
        }
        b.members.push_back(p);
        b.offsets.push_back(numel);
        r->bucket_of[p] = static_cast<size_t>(k);
        numel += t.numel();
      }
      if (b.members.empty()) {
        throw std::runtime_error("an empty bucket");
      }
      b.flat = at::zeros({numel}, r->params[b.members[0]].options().requires_grad(false));
      r->buckets.push_back(std::move(b));
    }
    if (p != r->params.size()) {
      throw std::runtime_error("bucket sizes do not cover the parameters");
    }
    if (hooks != 0) {
      for (size_t i = 0; i < r->params.size(); ++i) {
        auto acc = torch::autograd::impl::grad_accumulator(r->params[i]);
        if (!acc) {
          throw std::runtime_error("parameter #" + std::to_string(r->ids[i]) +
                                   " does not require a gradient");
        }
        r->hook_keys.push_back(acc->add_post_hook(std::make_unique<Finished>(r.get(), i)));
        r->accumulators.push_back(std::move(acc));
      }
    }
    out = r.release();
  });
  return out;
}

// The next backward pass starts each bucket's all-reduce once its gradients are in.
void stacklab_dist_buckets_arm(void* buckets) {
  try {
    static_cast<Reducer*>(buckets)->arm();
  } catch (...) {
    // A lock that cannot be taken: the step's launch reports what is wrong.
  }
}

// Starts the buckets the armed backward did not (all of them when it was not armed).
int stacklab_dist_buckets_launch(void* buckets, char* err, size_t len) {
  return guarded(err, len, [&] { static_cast<Reducer*>(buckets)->launch(); });
}

// Waits for the step's buckets (each within the group's timeout) and writes the sums into
// the gradients; `*from_hooks` is how many of them backward started.
int stacklab_dist_buckets_wait(void* buckets, int* from_hooks, char* err, size_t len) {
  return guarded(err, len, [&] { *from_hooks = static_cast<Reducer*>(buckets)->wait(); });
}

void stacklab_dist_buckets_free(void* buckets) {
  try {
    delete static_cast<Reducer*>(buckets);
  } catch (...) {
  }
}

}  // extern "C"
