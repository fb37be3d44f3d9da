#!/usr/bin/env bash
# stacklab's entry point on a fresh Linux machine with Rust, python3 and pip.
#
#   ./lab.sh               set up what is missing, build, open the lab on the embedded default
#   ./lab.sh test          set up what is missing, run the whole test suite
#   ./lab.sh build         set up what is missing and build the release binary only
#   ./lab.sh run ARGS...   build, then run `stacklab ARGS...` (e.g. ./lab.sh run doctor)
#   ./lab.sh cargo ARGS... run cargo with the libtorch environment (e.g. ./lab.sh cargo clippy)
#
# libtorch comes from the PyPI wheel torch==2.11.0 in a project-local venv (.venv, or
# $STACKLAB_VENV); it is installed only when missing. The binary gets an rpath to that
# venv's torch/lib, so target/release/stacklab runs without any environment variable.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${STACKLAB_VENV:-$root/.venv}
torch_version=2.11.0

die() { echo "lab.sh: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust from https://rustup.rs and run this again"
command -v python3 >/dev/null 2>&1 || die "python3 is missing: install python3 (and pip) and run this again"

torch_ok() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$torch_version" <<'PY' >/dev/null 2>&1
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

if ! torch_ok; then
  python3 -m pip --version >/dev/null 2>&1 || die "pip is missing for python3: install pip (e.g. python3-pip) and run this again"
  if [ ! -x "$venv/bin/python" ]; then
    echo "lab.sh: creating the Python venv $venv for libtorch" >&2
    python3 -m venv "$venv" >/dev/null 2>&1 \
      || die "python3 -m venv failed: install the venv module (e.g. python3-venv) and run this again"
  fi
  echo "lab.sh: installing torch==$torch_version into $venv (about 4.6 GB, once)" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "torch==$torch_version" \
    || die "pip could not install torch==$torch_version into $venv"
  torch_ok || die "torch==$torch_version did not import from $venv after installing it"
fi

# The NCCL backend of data-parallel training compiles against NCCL's and CUDA's headers:
# the wheel brings most of them; two small header packages at its CUDA version bring the
# rest (best effort: without them the build simply has no NCCL backend, see `doctor`).
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
if [ -n "$site" ] && [ -d "$site/nvidia/cu13/include" ] && [ ! -e "$site/nvidia/cu13/include/crt/host_config.h" ]; then
  echo "lab.sh: installing the CUDA headers NCCL's c10d backend needs (nvidia-cuda-crt, nvidia-cuda-cccl)" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    || echo "lab.sh: could not install them: this build will have no NCCL backend" >&2
fi

export VIRTUAL_ENV=$venv
export PATH="$venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
cd "$root"

case "${1:-}" in
  "")
    cargo build --release
    exec "$root/target/release/stacklab"
    ;;
  test)
    shift
    exec cargo test --release "$@"
    ;;
  build)
    shift
    exec cargo build --release "$@"
    ;;
  run)
    shift
    cargo build --release
    exec "$root/target/release/stacklab" "$@"
    ;;
  cargo)
    shift
    exec cargo "$@"
    ;;
  *)
    die "unknown command '$1' (expected nothing, test, build, run ARGS or cargo ARGS)"
    ;;
esac
