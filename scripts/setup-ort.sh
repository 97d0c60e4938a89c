#!/usr/bin/env bash
# Provide the ONNX Runtime shared library shira-ort loads, cached in the
# user's cache directory (outside the clone):
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/shira-ort/onnxruntime/<version>/linux-<x64|arm64>/libonnxruntime.so.1
#
# The library comes from the npm package onnxruntime-node, fetched with
# `npm pack` (never a plain npm install) into a temporary directory; only the
# one file needed is extracted and moved into place atomically. Nothing is
# downloaded when the library is already cached.
#
# Options:
#   --arch x64|arm64  fetch the library for this CPU architecture instead of
#                     the host's (e.g. --arch arm64 on an x86_64 machine for
#                     scripts/arm64-test.sh); it is cached next to the host's.
#
# Environment:
#   ORT_VERSION   onnxruntime-node version (default 1.24.1, the release whose
#                 C API header onnxruntime_go v1.27.0 was built against)
#   ORT_TARBALL   use this already downloaded onnxruntime-node-<version>.tgz
#                 instead of running npm pack (offline installs)
#
# Prints the library path and the export line that makes the Go code (and
# onnxruntime_go) find it.
set -euo pipefail

version="${ORT_VERSION:-1.24.1}"

case "$(uname -s)" in
  Linux) ;;
  *) echo "setup-ort: only Linux is supported by this script (got $(uname -s))" >&2; exit 1 ;;
esac

want_arch="$(uname -m)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) [[ $# -ge 2 ]] || { echo "setup-ort: --arch needs a value (x64 or arm64)" >&2; exit 2; }
            want_arch="$2"; shift 2 ;;
    --arch=*) want_arch="${1#--arch=}"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "setup-ort: unknown argument $1 (usage: setup-ort.sh [--arch x64|arm64])" >&2; exit 2 ;;
  esac
done

case "$want_arch" in
  x86_64 | amd64 | x64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "setup-ort: unsupported CPU architecture $want_arch (need x64/x86_64 or arm64/aarch64)" >&2; exit 1 ;;
esac

member="package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/shira-ort/onnxruntime/$version/linux-$arch"
lib="$dir/libonnxruntime.so.1"

if [[ -s "$lib" ]]; then
  echo "cached: $lib (onnxruntime-node@$version, nothing downloaded)"
else
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if [[ -n "${ORT_TARBALL:-}" ]]; then
    [[ -f "$ORT_TARBALL" ]] || { echo "setup-ort: ORT_TARBALL=$ORT_TARBALL does not exist" >&2; exit 1; }
    tgz="$ORT_TARBALL"
  else
    command -v npm >/dev/null || { echo "setup-ort: npm is needed (apt-get install npm), or set ORT_TARBALL" >&2; exit 1; }
    (cd "$tmp" && npm pack --silent "onnxruntime-node@$version" >/dev/null)
    tgz=$(ls "$tmp"/onnxruntime-node-*.tgz)
  fi
  tar -xzf "$tgz" -C "$tmp" "$member"
  [[ -s "$tmp/$member" ]] || { echo "setup-ort: $member missing from $tgz" >&2; exit 1; }
  # Same file system as the destination, then rename: readers never see a
  # partial library.
  part="$lib.part.$$"
  cp "$tmp/$member" "$part"
  chmod 0644 "$part"
  mv -f "$part" "$lib"
  echo "fetched: $lib (onnxruntime-node@$version, linux/$arch)"
fi

echo "$lib"
echo "export ONNXRUNTIME_SHARED_LIBRARY_PATH=$lib"
