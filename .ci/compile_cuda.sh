#!/usr/bin/env bash
# Compile every CUDA source in csrc/ for sm_75, sm_80 and sm_90 (cubin: front end and ptxas both run).
# Needs no GPU. Exits non-zero on the first error; exits 0 with a note when nvcc is absent.
# Usage: bash .ci/compile_cuda.sh            (from the repository root)
#        NVCC=/path/to/nvcc ARCHS="80 90" bash .ci/compile_cuda.sh
set -euo pipefail

cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
ARCHS="${ARCHS:-75 80 90}"

if ! command -v "$NVCC" >/dev/null 2>&1; then
    echo "compile_cuda: $NVCC not found, skipping the CUDA compile check"
    exit 0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$NVCC" --version | tail -n 1
count=0
for src in csrc/*.cu; do
    for arch in $ARCHS; do
        name="$(basename "$src" .cu)"
        # Same language options as the NVRTC build (diffcut_gpu/kernels/loader.py: COMPILE_OPTIONS).
        "$NVCC" -std=c++17 -arch="sm_${arch}" --cubin "$src" -o "$out/${name}_sm${arch}.cubin"
        echo "compile_cuda: ok $src sm_${arch}"
        count=$((count + 1))
    done
done
echo "compile_cuda: $count compilations passed"
