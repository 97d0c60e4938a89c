#!/usr/bin/env bash
# Cross-build shira-ort for linux/arm64 and run the core packages' tests
# under qemu-user with the arm64 ONNX Runtime library from the same npm
# package (onnxruntime-node) the x64 tests use.
#
# Needs (Debian 12): apt-get install -y gcc-aarch64-linux-gnu qemu-user
# (or qemu-user-static). The arm64 library is fetched once by
# `scripts/setup-ort.sh --arch arm64` into the user cache next to the x64 one.
#
# Usage: bash scripts/arm64-test.sh [go test flags for every package, e.g. -test.run Foo]
#
# Steps: 1. `go build ./...` and `go vet ./...` for GOOS=linux GOARCH=arm64 CGO_ENABLED=1
# CC=aarch64-linux-gnu-gcc (the whole module cross-builds); 2. `go test -c` for each core
# package; 3. each test binary runs in its package directory under qemu-aarch64 with
# QEMU_LD_PREFIX=/usr/aarch64-linux-gnu. Each step is timed.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu 7.2's default CPU model ("max", with SVE) corrupts vector state when
# a signal (Go's async preemption, SIGURG) interrupts ORT's kernels: outputs
# of concurrent Runs then differ in the last bits (TestConcurrentRunsWhileSwitchingModes
# failed in 4 of 4 runs; with GODEBUG=asyncpreemptoff=1 or a CPU model
# without SVE it passed 4 of 4). Emulate a Neoverse-N1 (ARMv8.2, no SVE:
# Graviton2, Ampere Altra, and the Cortex-A76 class of phone cores).
export QEMU_CPU="${QEMU_CPU:-neoverse-n1}"

pkgs=(./tensor ./adapter ./patch ./export ./internal/onnxwire ./ort ./test)
cc="${CC_ARM64:-aarch64-linux-gnu-gcc}"
sysroot="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
qemu=""
for q in qemu-aarch64 qemu-aarch64-static; do
  if command -v "$q" >/dev/null; then qemu="$q"; break; fi
done
command -v "$cc" >/dev/null || { echo "arm64-test: $cc not found: apt-get install -y gcc-aarch64-linux-gnu" >&2; exit 1; }
[[ -n "$qemu" ]] || { echo "arm64-test: qemu-aarch64 not found: apt-get install -y qemu-user (or qemu-user-static)" >&2; exit 1; }
[[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ]] || { echo "arm64-test: no arm64 loader in $sysroot (gcc-aarch64-linux-gnu installs it)" >&2; exit 1; }

lib=$(bash scripts/setup-ort.sh --arch arm64 | sed -n 's/^export ONNXRUNTIME_SHARED_LIBRARY_PATH=//p')
[[ -s "$lib" ]] || { echo "arm64-test: arm64 ONNX Runtime library missing" >&2; exit 1; }

export CGO_ENABLED=1 CC="$cc" GOOS=linux GOARCH=arm64
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT

t0=$SECONDS
echo "== cross-build: go build ./... && go vet ./... (linux/arm64, CC=$cc)"
go build ./...
go vet ./...
go build -o "$bin/shira-ort" ./cmd/shira-ort
file "$bin/shira-ort" 2>/dev/null | sed 's/^/   /' || true
for p in "${pkgs[@]}"; do
  go test -c -o "$bin/$(basename "$p").test" "$p"
done
echo "   built in $((SECONDS - t0)) s"

echo "== tests under $qemu (QEMU_CPU=$QEMU_CPU, QEMU_LD_PREFIX=$sysroot, ORT $lib)"
fail=0
for p in "${pkgs[@]}"; do
  s=$SECONDS
  log="$bin/$(basename "$p").log"
  if (cd "$p" && QEMU_LD_PREFIX="$sysroot" ONNXRUNTIME_SHARED_LIBRARY_PATH="$lib" \
        "$qemu" "$bin/$(basename "$p").test" -test.count=1 -test.timeout=20m "$@") >"$log" 2>&1; then
    echo "ok   $p ($((SECONDS - s)) s)"
  else
    echo "FAIL $p ($((SECONDS - s)) s)"
    grep -v "cpuid_info warning" "$log" | tail -n 40 | sed 's/^/   /'
    fail=1
  fi
done
echo "== total $((SECONDS - t0)) s"
exit $fail
