#!/usr/bin/env bash
# Provide the ONNX Runtime shared library shira-ort loads: a thin wrapper,
# kept for scripts and habits, that runs `shira-ort setup` from this checkout
# (go run ./cmd/shira-ort setup, from the repository root). Without a
# checkout, run `shira-ort setup` itself (go install .../cmd/shira-ort).
#
# The library comes from the npm package onnxruntime-node (never an npm
# install: Go fetches the package from the registry npm is configured with,
# checks it against the registry's published integrity and extracts the one
# file) into the user's cache directory:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/shira-ort/onnxruntime/<version>/linux-<x64|arm64>/libonnxruntime.so.1
#
# Nothing is downloaded when it is already cached.
#
# Options: those of `shira-ort setup` (see --help), among them
#   --arch x64|arm64  the library for this CPU architecture instead of the
#                     host's (e.g. --arch arm64 for scripts/arm64-test.sh)
# Relative paths in options are relative to the repository root.
#
# Environment:
#   ORT_VERSION   onnxruntime-node version (--version; default 1.24.1)
#   ORT_TARBALL   install from this onnxruntime-node-<version>.tgz
#                 (--tarball; offline installs)
#
# Prints the library path and the export line that makes the Go code (and
# onnxruntime_go) find it.
set -euo pipefail

args=()
if [[ -n "${ORT_VERSION:-}" ]]; then
  args+=(--version "$ORT_VERSION")
fi
if [[ -n "${ORT_TARBALL:-}" ]]; then
  tarball="$ORT_TARBALL"
  [[ "$tarball" == /* ]] || tarball="$PWD/$tarball"
  args+=(--tarball "$tarball")
fi

cd "$(dirname "$0")/.."
# A cross-compiling environment (GOOS/GOARCH of another machine) must not
# reach `go run`: the command runs here.
exec env -u GOOS -u GOARCH go run ./cmd/shira-ort setup ${args[@]+"${args[@]}"} "$@"
