//! The c10d shim of data-parallel training, for `build.rs`.
//!
//! `csrc/dist.cpp` and `csrc/dist_buckets.cpp` are always compiled into the binary (c10d's store and backend interface are
//! in libtorch_cpu); with `USE_C10D_GLOO` when Gloo's headers are found (the libtorch wheel
//! ships Gloo compiled but not its headers: Debian's `libgloo-dev` has them, or set
//! `GLOO_INCLUDE_DIR`). `csrc/dist_nccl.cpp` becomes a shared object linked against
//! libtorch_cuda when NCCL's and CUDA's headers are found (the wheel's `nvidia` packages, or
//! `STACKLAB_NCCL_INCLUDE` and `STACKLAB_CUDA_INCLUDE`); its bytes are embedded in the binary
//! (cfg `stacklab_nccl`) and loaded at run time, so the binary itself never needs
//! libtorch_cuda.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim compiled into the binary (the header too, for rebuilds).
const DIST_SOURCES: [&str; 3] = [
    "csrc/dist.cpp",
    "csrc/dist_buckets.cpp",
    "csrc/dist_common.h",
];

const STD_INCLUDES: [&str; 2] = ["/usr/include", "/usr/local/include"];

/// The folder holding `gloo/config.h`.
fn gloo_include() -> Option<PathBuf> {
    let from_env = std::env::var_os("GLOO_INCLUDE_DIR").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(STD_INCLUDES.iter().map(PathBuf::from))
        .find(|d| d.join("gloo/config.h").is_file())
}

/// The NCCL and CUDA include folders: the wheel's `nvidia/nccl` and `nvidia/cu*` packages
/// beside `torch/`, or the environment's.
fn nccl_includes(lib: &Path) -> Option<(PathBuf, PathBuf)> {
    let site = lib.join("../..");
    let nccl = std::env::var_os("STACKLAB_NCCL_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| site.join("nvidia/nccl/include"));
    let cuda_ok = |d: &Path| {
        ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"]
            .iter()
            .all(|f| d.join(f).exists())
    };
    let cuda = match std::env::var_os("STACKLAB_CUDA_INCLUDE") {
        Some(d) => Some(PathBuf::from(d)),
        None => std::fs::read_dir(site.join("nvidia"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("include"))
            .filter(|d| d.file_name().is_some() && cuda_ok(d))
            .max(),
    }?;
    (nccl.join("nccl.h").is_file() && cuda_ok(&cuda)).then_some((nccl, cuda))
}

pub fn build(lib: &Path, include: &Path) {
    for f in DIST_SOURCES {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=csrc/dist_nccl.cpp");
    println!("cargo:rerun-if-changed=build/dist.rs");
    for var in [
        "GLOO_INCLUDE_DIR",
        "STACKLAB_NCCL_INCLUDE",
        "STACKLAB_CUDA_INCLUDE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for d in STD_INCLUDES {
        println!("cargo:rerun-if-changed={d}/gloo/config.h");
    }
    println!("cargo:rustc-check-cfg=cfg(stacklab_nccl)");
    let mut b = cc::Build::new();
    b.cpp(true)
        .pic(true)
        .warnings(false)
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .files(DIST_SOURCES.iter().filter(|f| f.ends_with(".cpp")));
    let gloo = gloo_include();
    if let Some(g) = &gloo {
        if !STD_INCLUDES.iter().any(|s| Path::new(s) == g) {
            b.include(g);
        }
        b.define("USE_C10D_GLOO", None);
    }
    // The build script reruns on every commit (for the commit id): the shim, 25 s of C++,
    // is recompiled only when its source or the Gloo choice changed.
    let out = out_dir();
    let sources: String = DIST_SOURCES.iter().map(|f| source(f)).collect();
    let key = format!("{sources}|{gloo:?}|{}", include.display());
    if fresh(&out.join("libstacklab_dist.a"), "dist", &key) {
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=stacklab_dist");
    } else {
        b.compile("stacklab_dist");
        stamp("dist", &key);
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    let gloo_note = match &gloo {
        Some(g) => format!("with Gloo ({})", g.display()),
        None => "without Gloo (no gloo/config.h found: install libgloo-dev)".to_string(),
    };
    println!("cargo:rustc-env=STACKLAB_DIST_GLOO_BUILD={gloo_note}");
    let nccl_note = match nccl_includes(lib) {
        Some((nccl, cuda)) => match nccl_object(lib, include, &nccl, &cuda) {
            Ok(so) => {
                println!("cargo:rustc-cfg=stacklab_nccl");
                println!("cargo:rustc-env=STACKLAB_NCCL_SO={}", so.display());
                format!("with NCCL ({})", nccl.display())
            }
            Err(e) => {
                println!("cargo:warning=the NCCL backend was not built: {e}");
                format!("without NCCL (its shim failed to compile: {e})")
            }
        },
        None => "without NCCL (no NCCL and CUDA headers found beside libtorch)".to_string(),
    };
    println!("cargo:rustc-env=STACKLAB_DIST_NCCL_BUILD={nccl_note}");
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
}

fn source(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stamp_path(name: &str) -> PathBuf {
    out_dir().join(format!("{name}.stamp"))
}

/// Whether `output` exists and was built from `key` (sources and flags).
fn fresh(output: &Path, name: &str, key: &str) -> bool {
    output.is_file() && std::fs::read_to_string(stamp_path(name)).is_ok_and(|s| s == key)
}

fn stamp(name: &str, key: &str) {
    let _ = std::fs::write(stamp_path(name), key);
}

/// Compiles `csrc/dist_nccl.cpp` into `libstacklab_nccl.so` in OUT_DIR.
fn nccl_object(lib: &Path, include: &Path, nccl: &Path, cuda: &Path) -> Result<PathBuf, String> {
    let out = out_dir().join("libstacklab_nccl.so");
    let key = format!(
        "{}|{}|{}|{}",
        source("csrc/dist_nccl.cpp"),
        lib.display(),
        nccl.display(),
        cuda.display()
    );
    if fresh(&out, "nccl", &key) {
        return Ok(out);
    }
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd = Command::new(compiler.path());
    cmd.args(["-std=c++17", "-O2", "-fPIC", "-shared", "-w"])
        .args([
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-DUSE_C10D_NCCL",
            "-DUSE_CUDA",
        ])
        .arg(format!("-I{}", include.display()))
        .arg(format!(
            "-I{}",
            include.join("torch/csrc/api/include").display()
        ))
        .arg(format!("-I{}", nccl.display()))
        .arg(format!("-I{}", cuda.display()))
        .arg("csrc/dist_nccl.cpp")
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .args(["-ltorch_cuda", "-ltorch_cpu", "-lc10_cuda", "-lc10"])
        .arg(format!("-Wl,-rpath,{}", lib.display()));
    let o = cmd
        .output()
        .map_err(|e| format!("{}: {e}", compiler.path().display()))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
        return Err(format!("{} ({first})", o.status));
    }
    stamp("nccl", &key);
    Ok(out)
}
