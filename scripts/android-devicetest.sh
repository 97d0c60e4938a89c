#!/usr/bin/env bash
# One-step on-device check for Android (see docs/providers.md): build
# shira-ort for android/arm64 with the NDK's clang, take libonnxruntime.so
# from an ONNX Runtime Android AAR, make a device-test bundle from the tiny
# model on the host (`shira-ort devicetest make`), push everything with adb
# and run `shira-ort devicetest run` on the phone.
#
# Usage:
#   ANDROID_NDK_HOME=/path/to/ndk bash scripts/android-devicetest.sh --aar onnxruntime-android-1.24.1.aar \
#       [--bundle DIR] [--api 28] [-- devicetest run flags, e.g. --provider nnapi:fp16=1 --provider-fallback --rtol 1e-2]
#
# Needs: Go, the Android NDK, adb with one device attached, unzip, and the host
# ONNX Runtime (bash scripts/setup-ort.sh) to compute the reference outputs.
# NOT TESTED: no NDK, AAR or device was available when it was written.
set -euo pipefail
cd "$(dirname "$0")/.."

aar="" bundle="" api="${ANDROID_API:-28}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --aar) aar="$2"; shift 2 ;;
    --bundle) bundle="$2"; shift 2 ;;
    --api) api="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "android-devicetest: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$aar" && -f "$aar" ]] || { echo "android-devicetest: --aar onnxruntime-android-<version>.aar is required (Maven Central: com.microsoft.onnxruntime:onnxruntime-android)" >&2; exit 2; }
ndk="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}"
cc="$ndk/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android${api}-clang"
[[ -x "$cc" ]] || { echo "android-devicetest: $cc not found; set ANDROID_NDK_HOME" >&2; exit 1; }
command -v adb >/dev/null || { echo "android-devicetest: adb not found" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== build shira-ort for android/arm64 (API $api)"
CGO_ENABLED=1 GOOS=android GOARCH=arm64 CC="$cc" go build -o "$work/shira-ort" ./cmd/shira-ort
unzip -j -o -q "$aar" 'jni/arm64-v8a/*.so' -d "$work/lib"
[[ -f "$work/lib/libonnxruntime.so" ]] || { echo "android-devicetest: $aar has no jni/arm64-v8a/libonnxruntime.so" >&2; exit 1; }

if [[ -z "$bundle" ]]; then
  echo "== make a bundle from models/tiny on the host"
  bash scripts/setup-ort.sh >/dev/null
  go build -o "$work/host-shira-ort" ./cmd/shira-ort
  h="$work/host-shira-ort"
  "$h" export models/tiny/model.onnx -o "$work/tiny" >/dev/null
  "$h" create --model "$work/tiny" --mask rand --density 0.05 --scale 0.2 --seed 1 -o "$work/a.shira" >/dev/null
  "$h" create --model "$work/tiny" --mask wm --density 0.02 --scale 0.2 --seed 2 -o "$work/b.shira" >/dev/null
  "$h" devicetest make --model "$work/tiny" --adapter "$work/a.shira" --adapter "$work/a.shira:0.5+$work/b.shira" -o "$work/bundle"
  bundle="$work/bundle"
fi

dev=/data/local/tmp/shira-ort
echo "== push to $dev"
adb shell "rm -rf $dev && mkdir -p $dev"
adb push "$work/shira-ort" "$work"/lib/*.so "$dev/" >/dev/null
adb push "$bundle" "$dev/bundle" >/dev/null
echo "== run on the device"
adb shell "cd $dev && chmod +x shira-ort && LD_LIBRARY_PATH=$dev ADSP_LIBRARY_PATH=$dev HOME=$dev \
  ONNXRUNTIME_SHARED_LIBRARY_PATH=$dev/libonnxruntime.so ./shira-ort devicetest run bundle $*"
