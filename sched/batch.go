package sched

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/tensor"
)

// batchShape returns the batching signature of inputs and their number of
// rows: the signature lists the sorted input names with their dtypes and
// every dimension but the first, and rows is the common first dimension. A
// request can share a Run with another exactly when their signatures are
// equal. sig is "" (run alone) when inputs cannot be concatenated: no
// inputs, a nil tensor, a scalar, a dtype without a fixed size, data that
// does not match the shape, first dimensions that differ or are 0.
func batchShape(inputs map[string]*tensor.Tensor) (sig string, rows int) {
	if len(inputs) == 0 {
		return "", 0
	}
	names := make([]string, 0, len(inputs))
	for name := range inputs {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	rows = -1
	for _, name := range names {
		t := inputs[name]
		if t == nil || len(t.Shape) == 0 || t.DType.Size() == 0 {
			return "", 0
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil || n*t.DType.Size() != len(t.Data) {
			return "", 0
		}
		r := t.Shape[0]
		if r <= 0 || (rows >= 0 && int64(rows) != r) {
			return "", 0
		}
		rows = int(r)
		b.WriteString(strconv.Quote(name)) // names may hold any byte: quoting keeps the signature unambiguous
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(int(t.DType)))
		for _, d := range t.Shape[1:] {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteByte(';')
	}
	return b.String(), rows
}

// concat joins the inputs of reqs (equal signatures) along dimension 0.
func concat(reqs []*request, rows int) map[string]*tensor.Tensor {
	first := reqs[0].inputs
	out := make(map[string]*tensor.Tensor, len(first))
	for name, t := range first {
		size := 0
		for _, r := range reqs {
			size += len(r.inputs[name].Data)
		}
		data := make([]byte, 0, size)
		for _, r := range reqs {
			data = append(data, r.inputs[name].Data...)
		}
		shape := slices.Clone(t.Shape)
		shape[0] = int64(rows)
		out[name] = &tensor.Tensor{DType: t.DType, Shape: shape, Data: data}
	}
	return out
}

// split cuts every output of a batched Run along dimension 0 into one map
// per request, each holding exactly that request's rows (aliasing outs).
func split(outs map[string]*tensor.Tensor, reqs []*request, rows int) ([]map[string]*tensor.Tensor, error) {
	type cut struct {
		t        *tensor.Tensor
		rowBytes int
	}
	cuts := make(map[string]cut, len(outs))
	for name, t := range outs {
		if t == nil {
			return nil, fmt.Errorf("sched: batched Run of %d rows: output %s is nil", rows, quote(name))
		}
		if len(t.Shape) == 0 || t.Shape[0] != int64(rows) {
			return nil, fmt.Errorf("sched: batched Run of %d rows: output %s has shape %v, want %d rows in dimension 0", rows, quote(name), t.Shape, rows)
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil || t.DType.Size() == 0 || n*t.DType.Size() != len(t.Data) {
			return nil, fmt.Errorf("sched: batched Run of %d rows: output %s (%v %v, %d bytes) cannot be split", rows, quote(name), t.DType, t.Shape, len(t.Data))
		}
		cuts[name] = cut{t, len(t.Data) / rows}
	}
	res := make([]map[string]*tensor.Tensor, len(reqs))
	row := 0
	for i, r := range reqs {
		m := make(map[string]*tensor.Tensor, len(cuts))
		for name, c := range cuts {
			lo, hi := row*c.rowBytes, (row+r.rows)*c.rowBytes
			shape := slices.Clone(c.t.Shape)
			shape[0] = int64(r.rows)
			m[name] = &tensor.Tensor{DType: c.t.DType, Shape: shape, Data: c.t.Data[lo:hi:hi]}
		}
		res[i] = m
		row += r.rows
	}
	return res, nil
}
