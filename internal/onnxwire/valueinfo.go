package onnxwire

import (
	"fmt"

	"github.com/shira-ort/shira-ort/tensor"
)

// ValueInfo is a parsed ValueInfoProto.
type ValueInfo struct{ *Message }

// Name returns ValueInfoProto.name.
func (v *ValueInfo) Name() string { return v.getString(ValueInfoName) }

// TensorType returns the element type and dimensions of a tensor-typed
// value. A dimension that is symbolic or unknown is returned as -1 and its
// dim_param (if any) in params. ok is false when the value is not a tensor.
func (v *ValueInfo) TensorType() (dtype tensor.DType, dims []int64, params []string, ok bool, err error) {
	tf := v.Get(ValueInfoType)
	if tf == nil {
		return 0, nil, nil, false, nil
	}
	tp, err := tf.Message()
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("onnxwire: value %q type: %w", v.Name(), err)
	}
	ttf := tp.Get(TypeTensorType)
	if ttf == nil {
		return 0, nil, nil, false, nil
	}
	tt, err := ttf.Message()
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("onnxwire: value %q tensor type: %w", v.Name(), err)
	}
	et, err := tt.getInt(TypeTensorElem, 0)
	if err != nil {
		return 0, nil, nil, false, err
	}
	sf := tt.Get(TypeTensorShape)
	if sf == nil {
		return tensor.DType(et), nil, nil, true, nil
	}
	shape, err := sf.Message()
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("onnxwire: value %q shape: %w", v.Name(), err)
	}
	dimMsgs, err := shape.messages(ShapeDim)
	if err != nil {
		return 0, nil, nil, false, fmt.Errorf("onnxwire: value %q dims: %w", v.Name(), err)
	}
	dims = make([]int64, len(dimMsgs))
	params = make([]string, len(dimMsgs))
	for i, d := range dimMsgs {
		dims[i] = -1
		if d.Has(DimValue) {
			if dims[i], err = d.getInt(DimValue, -1); err != nil {
				return 0, nil, nil, false, err
			}
		}
		params[i] = d.getString(DimParam)
	}
	return tensor.DType(et), dims, params, true, nil
}

// NewTensorValueInfo builds a tensor-typed ValueInfoProto. A negative
// dimension is written without dim_value; when params[i] is non-empty it is
// written as dim_param instead of a value. params may be nil.
func NewTensorValueInfo(name string, dtype tensor.DType, dims []int64, params []string) *ValueInfo {
	shape := &Message{}
	for i, d := range dims {
		dm := &Message{}
		switch {
		case i < len(params) && params[i] != "":
			dm.Append(StringField(DimParam, params[i]))
		case d >= 0:
			dm.Append(VarintField(DimValue, uint64(d)))
		}
		shape.Append(MessageField(ShapeDim, dm))
	}
	tt := &Message{}
	tt.Append(VarintField(TypeTensorElem, uint64(dtype)))
	tt.Append(MessageField(TypeTensorShape, shape))
	tp := &Message{}
	tp.Append(MessageField(TypeTensorType, tt))
	v := &Message{}
	v.Append(StringField(ValueInfoName, name))
	v.Append(MessageField(ValueInfoType, tp))
	return &ValueInfo{v}
}
