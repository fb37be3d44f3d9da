//! The CPU runtime under libtorch: how its OpenMP threads wait, and how freed tensor memory
//! is kept for the next allocation.
//!
//! ## Threads
//!
//! libtorch's CPU kernels run on OpenMP (GNU libgomp). At the end of every parallel region
//! libgomp's threads spin before they sleep: 300,000 rounds by default, about a millisecond.
//! On a machine whose cores are shared with other processes (a CI runner, a laptop
//! compiling, a lab running two trainings), a spinning thread burns the time slice its
//! sibling needs to reach the barrier, and every small op of a step pays for it; with no
//! spinning at all (`OMP_WAIT_POLICY=PASSIVE`), an idle machine pays a futex wake-up at
//! every region instead. stacklab runs libgomp with `GOMP_SPINCOUNT=10000`, a short spin,
//! unless the environment already chooses (`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` set:
//! theirs is kept). Measured on 2 cores with configs/tiny.toml's training step (tokens/s):
//!
//! | spin rounds      | idle         | 2 busy processes | 6 busy processes |
//! |------------------|--------------|------------------|------------------|
//! | 0 (PASSIVE)      | 5,500-5,850  | 3,370-3,740      | 1,130-1,700      |
//! | 10,000 (chosen)  | 7,500-8,000  | 3,330-3,370      | 1,280-1,560      |
//! | 300,000 (libgomp)| 7,850-9,080  | 1,970-2,230      | 190-620          |
//!
//! libgomp reads its environment once, in its constructor, before `main`; and glibc resets
//! the environment to the one the process started with when libc initialises, after the
//! executable's `.preinit_array` ran and before libgomp's constructor. So the
//! pre-initialisation ([`PREINIT`]) lends the variable a slot of that initial environment,
//! the `_` entry (the shell's last command; else another variable libraries do not read),
//! and the executable's initialisation ([`RESTORE`]), which runs after every library's
//! constructor, gives the slot back. The program then sees its environment unchanged.
//!
//! ## Memory
//!
//! libtorch allocates CPU tensors with glibc's malloc, which serves large blocks (from
//! 128 KiB, adapting up to 32 MiB) with fresh `mmap`s and returns freed heap tops to the
//! system: every step then pays page faults to get the same memory again (a tiny training
//! step's 32 MiB logits, its activations). [`RESTORE`] raises both thresholds
//! (`M_MMAP_THRESHOLD` 1 GiB, `M_TRIM_THRESHOLD` 2 GiB) so freed blocks are reused: system
//! time of the tiny config's forward and backward fell from about 2.8 s to 0.65 s in the
//! same run. A process keeps up to 2 GiB of freed memory for reuse instead of unmapping it.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use libc::c_char;

/// The setting lent to libgomp; [`omp_wait_policy`] reports it without the NUL.
static ENTRY: &[u8] = b"GOMP_SPINCOUNT=10000\0";
static SLOT: AtomicPtr<*const c_char> = AtomicPtr::new(std::ptr::null_mut());
static SAVED: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());
static APPLIED: AtomicBool = AtomicBool::new(false);

/// Variables a library may read while it initialises: never lent.
const KEEP: [&[u8]; 16] = [
    b"LD_",
    b"OMP_",
    b"GOMP_",
    b"KMP_",
    b"MKL",
    b"OPENBLAS",
    b"CUDA",
    b"NVIDIA",
    b"TORCH",
    b"PYTORCH",
    b"NCCL",
    b"STACKLAB",
    b"MALLOC",
    b"GLIBC",
    b"PATH",
    b"HOME",
];

/// # Safety
/// `envp` is the process's initial, NUL-terminated environment array.
unsafe fn env_entries(envp: *const *const c_char) -> Vec<(*mut *const c_char, &'static [u8])> {
    let mut out = Vec::new();
    if envp.is_null() {
        return out;
    }
    let mut p = envp as *mut *const c_char;
    while !(*p).is_null() {
        out.push((p, std::ffi::CStr::from_ptr(*p).to_bytes()));
        p = p.add(1);
    }
    out
}

extern "C" fn lend_a_slot(
    _argc: libc::c_int,
    _argv: *const *const c_char,
    envp: *const *const c_char,
) {
    // SAFETY: the dynamic loader calls this before any library is initialised, with one
    // thread, and `envp` the initial environment (valid NUL-terminated strings).
    unsafe {
        let entries = env_entries(envp);
        let named = |e: &[u8], name: &[u8]| {
            e.len() > name.len() && e.starts_with(name) && e[name.len()] == b'='
        };
        if entries
            .iter()
            .any(|(_, e)| named(e, b"OMP_WAIT_POLICY") || named(e, b"GOMP_SPINCOUNT"))
        {
            return;
        }
        let lendable = entries
            .iter()
            .find(|(_, e)| e.starts_with(b"_="))
            .or_else(|| {
                entries
                    .iter()
                    .rev()
                    .find(|(_, e)| !KEEP.iter().any(|k| e.starts_with(k)))
            });
        if let Some(&(slot, _)) = lendable {
            SAVED.store(*slot as *mut c_char, Ordering::SeqCst);
            SLOT.store(slot, Ordering::SeqCst);
            *slot = ENTRY.as_ptr() as *const c_char;
            APPLIED.store(true, Ordering::SeqCst);
        }
    }
}

extern "C" fn give_the_slot_back(
    _argc: libc::c_int,
    _argv: *const *const c_char,
    _envp: *const *const c_char,
) {
    keep_freed_memory();
    let slot = SLOT.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !slot.is_null() {
        // SAFETY: `slot` points into the initial environment array, which lives as long as
        // the process; it held ENTRY since the pre-initialisation.
        unsafe { *slot = SAVED.load(Ordering::SeqCst) };
    }
}

/// Raises malloc's mmap and trim thresholds (see the module's documentation), unless the
/// environment tunes malloc itself (`GLIBC_TUNABLES`, `MALLOC_*_`).
fn keep_freed_memory() {
    let tuned = std::env::vars_os().any(|(k, _)| {
        let k = k.to_string_lossy();
        k == "GLIBC_TUNABLES" || k.starts_with("MALLOC_")
    });
    if tuned {
        return;
    }
    // SAFETY: mallopt only changes malloc's parameters; it runs before main, single-threaded.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 1 {
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            MALLOC_TUNED.store(true, Ordering::SeqCst);
        }
    }
}

static MALLOC_TUNED: AtomicBool = AtomicBool::new(false);

/// malloc's thresholds in this process, for reports.
pub fn malloc_policy() -> &'static str {
    if MALLOC_TUNED.load(Ordering::SeqCst) {
        "freed memory kept for reuse (M_MMAP_THRESHOLD 1 GiB, M_TRIM_THRESHOLD 2 GiB)"
    } else {
        "glibc's default"
    }
}

type InitFn = extern "C" fn(libc::c_int, *const *const c_char, *const *const c_char);

/// The executable's pre-initialisation entry (ELF `DT_PREINIT_ARRAY`).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".preinit_array"]
pub static PREINIT: InitFn = lend_a_slot;

/// Runs with the executable's constructors, after every library's.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
pub static RESTORE: InitFn = give_the_slot_back;

/// How OpenMP threads wait in this process: the environment's choice, or the one stacklab
/// made. (Calling it also keeps this module linked into every program that reports it.)
pub fn omp_wait_policy() -> String {
    if APPLIED.load(Ordering::SeqCst) {
        let entry = &ENTRY[..ENTRY.len() - 1];
        return String::from_utf8_lossy(entry).into_owned();
    }
    std::env::var("OMP_WAIT_POLICY")
        .map(|v| format!("OMP_WAIT_POLICY={v}"))
        .or_else(|_| std::env::var("GOMP_SPINCOUNT").map(|v| format!("GOMP_SPINCOUNT={v}")))
        .unwrap_or_else(|_| "libgomp's default".to_string())
}
