#!/usr/bin/python3
"""Generate the small ONNX models the ort package tests run on.

Run from the repository root with Debian's python3-onnx (onnx 1.12):

    /usr/bin/python3 ort/testdata/gen_models.py            # rewrite ort/testdata/*

Each exported model is a directory in the layout export.Expose writes:
model.onnx (every exposed weight is an initializer AND a graph input, its data
external in model.weights), model.weights (exposed weights at 4096-byte
aligned offsets) and manifest.json. A *_plain.onnx beside it holds the same
graph with every weight as an ordinary constant initializer.

The committed mlp/ and half/ directories were then rewritten by export.Expose
from mlp_plain.onnx and half_plain.onnx (same names and offsets), so their
manifests are exactly what the product writes; ids/ keeps this script's
layout (its embedding E is exposed by hand: export does not pick Gather
weights) with the manifest fields export.LoadManifest requires.

Models (deterministic, seeded):
  mlp    X f32[batch,8] -> MatMul W1[8,16] -> Relu -> MatMul W2[16,4] -> Add b -> Y f32[batch,4]
         exposed: W1, W2 (b stays a constant)
  half   X f16[batch,8] -> MatMul Wh f16[8,4] -> Y f16[batch,4]
         XB bf16[batch,8] -> Cast f32 -> MatMul (Cast f32 of Wb bf16[8,4]) -> Cast bf16 -> YB bf16[batch,4]
         exposed: Wh (float16), Wb (bfloat16)
  ids    ids i64[n] -> Gather E f32[10,8] -> MatMul W f32[8,4] -> Y f32[n,4];  next = ids + 1 (int64)
         exposed: E, W
"""
import argparse
import hashlib
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGN = 4096
DTYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}


def bf16_bits(a):
    """Round float32 array to bfloat16 bit patterns (nearest even)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def raw_bytes(elem, arr):
    if elem == TensorProto.BFLOAT16:
        return bf16_bits(arr).tobytes()
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}[elem]
    return np.asarray(arr, dtype=np_type).tobytes()


def const_tensor(name, elem, arr):
    t = TensorProto()
    t.name = name
    t.data_type = elem
    t.dims.extend(arr.shape)
    t.raw_data = raw_bytes(elem, arr)
    return t


def build(graph_fn, out_dir, plain_path):
    """graph_fn(exposed) returns (nodes, inputs, outputs, consts, weights) where
    weights is a list of (name, elem, array) to expose."""
    nodes, inputs, outputs, consts, weights = graph_fn()
    os.makedirs(out_dir, exist_ok=True)

    # Plain model: every weight is a constant initializer.
    plain_inits = consts + [const_tensor(n, e, a) for n, e, a in weights]
    g = helper.make_graph(nodes, "plain", inputs, outputs, initializer=plain_inits)
    save(g, plain_path)

    # Exported model: weights external, at aligned offsets, and graph inputs.
    blob = bytearray()
    entries = []
    inits = list(consts)
    graph_inputs = list(inputs)
    for name, elem, arr in weights:
        data = raw_bytes(elem, arr)
        off = (len(blob) + ALIGN - 1) // ALIGN * ALIGN
        blob.extend(b"\0" * (off - len(blob)))
        blob.extend(data)
        t = TensorProto()
        t.name = name
        t.data_type = elem
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "model.weights"), ("offset", str(off)), ("length", str(len(data)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        inits.append(t)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
        entries.append({
            "name": name,
            "dtype": DTYPE_NAMES[elem],
            "shape": list(arr.shape),
            "offset": off,
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    g = helper.make_graph(nodes, "exposed", graph_inputs, outputs, initializer=inits)
    save(g, os.path.join(out_dir, "model.onnx"))
    with open(os.path.join(out_dir, "model.weights"), "wb") as f:
        f.write(blob)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"format": "shira-ort/export/v1", "model": "model.onnx", "weights_file": "model.weights",
                   "fingerprint": fingerprint(entries), "ir_version": 8, "alignment": ALIGN, "tensors": entries},
                  f, indent=2)
        f.write("\n")


def fingerprint(entries):
    """export.Fingerprint: sha256 over the sorted "name|dtype|d0,d1|sha256" lines."""
    lines = sorted("%s|%s|%s|%s\n" % (e["name"], e["dtype"], ",".join(str(d) for d in e["shape"]), e["sha256"])
                   for e in entries)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def save(g, path):
    m = helper.make_model(g, producer_name="shira-ort-testdata", opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


def mlp():
    r = np.random.RandomState(1)
    w1 = r.uniform(-1, 1, (8, 16)).astype(np.float32)
    w2 = r.uniform(-1, 1, (16, 4)).astype(np.float32)
    b = r.uniform(-1, 1, (4,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "W2"], ["y0"], name="mm2"),
        helper.make_node("Add", ["y0", "b"], ["Y"], name="add"),
    ]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])]
    return nodes, ins, outs, [numpy_helper.from_array(b, "b")], [
        ("W1", TensorProto.FLOAT, w1), ("W2", TensorProto.FLOAT, w2)]


def half():
    r = np.random.RandomState(2)
    wh = r.uniform(-1, 1, (8, 4)).astype(np.float16)
    wb = r.uniform(-1, 1, (8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["X", "Wh"], ["Y"], name="mm_half"),
        helper.make_node("Cast", ["XB"], ["xb32"], to=TensorProto.FLOAT, name="cast_x"),
        helper.make_node("Cast", ["Wb"], ["wb32"], to=TensorProto.FLOAT, name="cast_w"),
        helper.make_node("MatMul", ["xb32", "wb32"], ["yb32"], name="mm_bf16"),
        helper.make_node("Cast", ["yb32"], ["YB"], to=TensorProto.BFLOAT16, name="cast_y"),
    ]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT16, ["batch", 8]),
           helper.make_tensor_value_info("XB", TensorProto.BFLOAT16, ["batch", 8])]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, ["batch", 4]),
            helper.make_tensor_value_info("YB", TensorProto.BFLOAT16, ["batch", 4])]
    return nodes, ins, outs, [], [("Wh", TensorProto.FLOAT16, wh), ("Wb", TensorProto.BFLOAT16, wb)]


def ids():
    r = np.random.RandomState(3)
    e = r.uniform(-1, 1, (10, 8)).astype(np.float32)
    w = r.uniform(-1, 1, (8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0, name="gather"),
        helper.make_node("MatMul", ["emb", "W"], ["Y"], name="mm"),
        helper.make_node("Add", ["ids", "one"], ["next"], name="inc"),
    ]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("next", TensorProto.INT64, ["n"])]
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    return nodes, ins, outs, [one], [("E", TensorProto.FLOAT, e), ("W", TensorProto.FLOAT, w)]


def main():
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    for name, fn in (("mlp", mlp), ("half", half), ("ids", ids)):
        build(fn, os.path.join(here, name), os.path.join(here, name + "_plain.onnx"))


if __name__ == "__main__":
    main()
