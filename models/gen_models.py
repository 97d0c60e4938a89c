#!/usr/bin/env python3
"""Generate the small ONNX models shipped in models/ (fixed seeds, reproducible).

Run with Debian's python3-onnx (1.12) and numpy:  /usr/bin/python3 models/gen_models.py

  models/tiny/model.onnx            the demo MLP (MatMul, Gemm transB=1, dynamic batch)
  models/testdata/transpose/        a weight reaching MatMul through Transpose
  models/testdata/constant/         weights stored as Constant nodes
  models/testdata/conv/             a small CNN (Conv, Conv, GlobalAveragePool, Gemm)
  models/testdata/fp16/             fp16 weights, inputs and outputs
  models/testdata/bf16/             bf16 weights behind Cast(to=float)
  models/testdata/external/         weights in an external data file
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 17)]


def rnd(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save(model, *parts, external=False):
    path = os.path.join(HERE, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=0)
    else:
        onnx.save_model(model, path)
    print(path, os.path.getsize(path), "bytes")


def tiny():
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rnd(rng, 16, 32), "fc1.weight"),
        numpy_helper.from_array(rnd(rng, 32, scale=0.1), "fc1.bias"),
        numpy_helper.from_array(rnd(rng, 32, 32, scale=0.3), "fc2.weight"),
        numpy_helper.from_array(rnd(rng, 32, scale=0.1), "fc2.bias"),
        numpy_helper.from_array(rnd(rng, 8, 32, scale=0.3), "head.weight"),
        numpy_helper.from_array(rnd(rng, 8, scale=0.1), "head.bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.weight"], ["h1"], name="/fc1/MatMul"),
        helper.make_node("Add", ["h1", "fc1.bias"], ["h1b"], name="/fc1/Add"),
        helper.make_node("Relu", ["h1b"], ["a1"], name="/act1/Relu"),
        helper.make_node("MatMul", ["a1", "fc2.weight"], ["h2"], name="/fc2/MatMul"),
        helper.make_node("Add", ["h2", "fc2.bias"], ["h2b"], name="/fc2/Add"),
        helper.make_node("Relu", ["h2b"], ["a2"], name="/act2/Relu"),
        helper.make_node("Gemm", ["a2", "head.weight", "head.bias"], ["y"], name="/head/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "tiny_mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    save(helper.make_model(g, opset_imports=OPSET, producer_name="shira-ort gen_models.py"), "tiny", "model.onnx")


def transpose():
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rnd(rng, 24, 12), "proj.weight"),  # [out, in] as torch keeps it
             numpy_helper.from_array(rnd(rng, 24, 24, scale=0.3), "out.weight")]
    nodes = [
        helper.make_node("Transpose", ["proj.weight"], ["proj.weight_T"], name="/proj/Transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "proj.weight_T"], ["h"], name="/proj/MatMul"),
        helper.make_node("Tanh", ["h"], ["a"], name="/act/Tanh"),
        helper.make_node("MatMul", ["a", "out.weight"], ["y"], name="/out/MatMul"),
    ]
    g = helper.make_graph(nodes, "transpose_mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])], inits)
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "transpose", "model.onnx")


def constant():
    rng = np.random.default_rng(3)
    w1, w2 = rnd(rng, 10, 20), rnd(rng, 20, 6, scale=0.3)
    nodes = [
        helper.make_node("Constant", [], ["w1"], name="/w1/Constant",
                         value=numpy_helper.from_array(w1, "w1_value")),
        helper.make_node("Constant", [], ["w2"], name="/w2/Constant",
                         value=numpy_helper.from_array(w2, "w2_value")),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="/l1/MatMul"),
        helper.make_node("Sigmoid", ["h"], ["a"], name="/act/Sigmoid"),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="/l2/MatMul"),
    ]
    g = helper.make_graph(nodes, "constant_mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], [])
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "constant", "model.onnx")


def conv():
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rnd(rng, 8, 3, 3, 3, scale=0.3), "conv1.weight"),
        numpy_helper.from_array(rnd(rng, 8, scale=0.1), "conv1.bias"),
        numpy_helper.from_array(rnd(rng, 16, 8, 3, 3, scale=0.2), "conv2.weight"),
        numpy_helper.from_array(rnd(rng, 5, 16, scale=0.3), "fc.weight"),
        numpy_helper.from_array(rnd(rng, 5, scale=0.1), "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["c2"], name="/conv2/Conv", strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="/fc/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "small_cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "conv", "model.onnx")


def fp16():
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rnd(rng, 16, 24).astype(np.float16), "l1.weight"),
             numpy_helper.from_array(rnd(rng, 24, scale=0.1).astype(np.float16), "l1.bias"),
             numpy_helper.from_array(rnd(rng, 24, 8, scale=0.3).astype(np.float16), "l2.weight")]
    nodes = [
        helper.make_node("MatMul", ["x", "l1.weight"], ["h"], name="/l1/MatMul"),
        helper.make_node("Add", ["h", "l1.bias"], ["hb"], name="/l1/Add"),
        helper.make_node("Relu", ["hb"], ["a"], name="/act/Relu"),
        helper.make_node("MatMul", ["a", "l2.weight"], ["y"], name="/l2/MatMul"),
    ]
    g = helper.make_graph(nodes, "fp16_mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 8])], inits)
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "fp16", "model.onnx")


def bf16():
    rng = np.random.default_rng(6)
    w = rnd(rng, 12, 16)
    bits = (w.view(np.uint32) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1)) >> 16  # round to nearest even
    t = helper.make_tensor("l1.weight", TensorProto.BFLOAT16, [12, 16], bits.astype(np.uint16).tobytes(), raw=True)
    nodes = [
        helper.make_node("Cast", ["l1.weight"], ["l1.weight_f32"], name="/l1/Cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "l1.weight_f32"], ["y"], name="/l1/MatMul"),
    ]
    g = helper.make_graph(nodes, "bf16_linear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], [t])
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "bf16", "model.onnx")


def external():
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rnd(rng, 32, 64), "enc.weight"),
             numpy_helper.from_array(rnd(rng, 64, scale=0.1), "enc.bias"),
             numpy_helper.from_array(rnd(rng, 64, 16, scale=0.2), "dec.weight")]
    nodes = [
        helper.make_node("MatMul", ["x", "enc.weight"], ["h"], name="/enc/MatMul"),
        helper.make_node("Add", ["h", "enc.bias"], ["hb"], name="/enc/Add"),
        helper.make_node("Relu", ["hb"], ["a"], name="/act/Relu"),
        helper.make_node("MatMul", ["a", "dec.weight"], ["y"], name="/dec/MatMul"),
    ]
    g = helper.make_graph(nodes, "external_mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    save(helper.make_model(g, opset_imports=OPSET), "testdata", "external", "model.onnx", external=True)


if __name__ == "__main__":
    tiny()
    transpose()
    constant()
    conv()
    fp16()
    bf16()
    external()
