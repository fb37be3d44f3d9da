// What csrc/dist.cpp and csrc/dist_buckets.cpp share: the group a handle points to, and
// the guard that turns what libtorch throws into a message for Rust.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace stacklab_dist {

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using BackendPtr = c10::intrusive_ptr<c10d::Backend>;
using WorkPtr = c10::intrusive_ptr<c10d::Work>;

struct Group {
  StorePtr store;
  BackendPtr backend;
  std::chrono::milliseconds timeout;
};

inline void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) {
    return;
  }
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// The message of the exception being handled.
inline std::string current_message() {
  try {
    throw;
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown C++ exception";
  }
}

// Runs `f`, turning an exception into -1 and its message.
template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (...) {
    set_error(err, len, current_message());
  }
  return -1;
}

inline void wait_all(const std::vector<WorkPtr>& works, std::chrono::milliseconds timeout) {
  for (const auto& w : works) {
    if (!w->wait(timeout)) {
      throw std::runtime_error("a collective did not complete");
    }
  }
}

}  // namespace stacklab_dist
