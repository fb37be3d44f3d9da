//! Build script: give the binary an rpath to the libtorch it was linked against, so it
//! runs without LD_LIBRARY_PATH, compile the small C++ shim that reads the CUDA caching
//! allocator's statistics (`csrc/cuda_memory.cpp`) and the c10d shim of data-parallel
//! training (`csrc/dist.cpp`, with Gloo when its headers are found, and the NCCL backend as
//! a shared object when the NCCL and CUDA headers are: see `build/dist.rs`), and record the
//! git commit for checkpoint metadata.
use std::path::Path;
use std::process::Command;

#[path = "build/dist.rs"]
mod dist;

fn main() {
    // torch-sys exports the lib dir it linked against (its `links = "tch"` key).
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    println!("cargo:rustc-env=STACKLAB_TORCH_LIB={lib}");
    if !lib.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // The headers sit beside the libraries in both layouts (a libtorch folder, the wheel).
    let include = Path::new(&lib).join("../include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .flag("-std=c++17")
        .file("csrc/cuda_memory.cpp")
        .compile("stacklab_cuda_memory");
    println!("cargo:rerun-if-changed=csrc/cuda_memory.cpp");
    dist::build(Path::new(&lib), &include);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let commit = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=STACKLAB_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
}
