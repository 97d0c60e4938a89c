package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// The Open Inference Protocol (KServe v2 REST): health, metadata, infer.
// Tensors travel as JSON numbers ("data", flat or nested row-major); the
// adapter configuration is the request parameter "adapter".

// AdapterParameter is the infer request parameter that chooses the adapter
// configuration: "name", "name@alpha" or several joined by commas; absent
// or "" for the base model.
const AdapterParameter = "adapter"

// kserveTensor is a tensor in a request or response.
type kserveTensor struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type kserveRequest struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []kserveTensor `json:"inputs"`
	Outputs    []struct {
		Name string `json:"name"`
	} `json:"outputs,omitempty"`
}

type kserveOutput struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Datatype string  `json:"datatype"`
	Data     any     `json:"data"`
}

type kserveResponse struct {
	ModelName  string         `json:"model_name"`
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Outputs    []kserveOutput `json:"outputs"`
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// kserveTypes maps the protocol's datatypes to tensor dtypes.
var kserveTypes = map[string]tensor.DType{
	"BOOL": tensor.Bool, "UINT8": tensor.Uint8, "UINT16": tensor.Uint16, "UINT32": tensor.Uint32,
	"UINT64": tensor.Uint64, "INT8": tensor.Int8, "INT16": tensor.Int16, "INT32": tensor.Int32,
	"INT64": tensor.Int64, "FP16": tensor.Float16, "FP32": tensor.Float32, "FP64": tensor.Float64,
	"BF16": tensor.BFloat16,
}

func kserveType(d tensor.DType) string {
	for k, v := range kserveTypes {
		if v == d {
			return k
		}
	}
	return strings.ToUpper(d.String())
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	return nil
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) error {
	ok := !s.closing.Load()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]bool{"ready": ok})
	return nil
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"name": "shira-ort", "version": ort.Version(), "extensions": []string{"adapters"}})
	return nil
}

// model checks the {model} path value.
func (s *Server) model(r *http.Request) error {
	if m := r.PathValue("model"); m != s.o.Name {
		return &httpError{http.StatusNotFound, fmt.Errorf("%w: no model %q (this server serves %q)", ErrBadRequest, m, s.o.Name)}
	}
	return nil
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) error {
	if err := s.model(r); err != nil {
		return err
	}
	meta := func(ios []ort.IOInfo) []tensorMeta {
		out := make([]tensorMeta, len(ios))
		for i, io := range ios {
			out[i] = tensorMeta{Name: io.Name, Datatype: kserveType(io.DType), Shape: io.Shape}
		}
		return out
	}
	names := []string{}
	for _, a := range s.eng.Catalog.List() {
		names = append(names, a.Name)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": s.o.Name, "platform": s.eng.Platform, "versions": []string{"1"},
		"inputs": meta(s.eng.Inputs), "outputs": meta(s.eng.Outputs),
		"parameters": map[string]any{"adapters": names},
	})
	return nil
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) error {
	if err := s.model(r); err != nil {
		return err
	}
	return s.ready(w, r)
}

// infer is POST /v2/models/{model}/infer.
func (s *Server) infer(w http.ResponseWriter, r *http.Request) error {
	if err := s.model(r); err != nil {
		return err
	}
	var req kserveRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	inputs, err := s.decodeInputs(req.Inputs)
	if err != nil {
		return err
	}
	outNames, err := s.outputNames(req)
	if err != nil {
		return err
	}
	spec := ""
	if v, ok := req.Parameters[AdapterParameter]; ok {
		str, isStr := v.(string)
		if !isStr {
			return fmt.Errorf("%w: parameter %q must be a string", ErrBadRequest, AdapterParameter)
		}
		spec = str
	}
	adm, err := s.admit(r.Context(), spec)
	if err != nil {
		return err
	}
	defer adm.release()
	outs, err := s.sched.Run(r.Context(), adm.key, inputs)
	if err != nil {
		return err
	}
	resp := kserveResponse{ModelName: s.o.Name, ID: req.ID, Parameters: map[string]any{AdapterParameter: string(adm.shown)}}
	for _, name := range outNames {
		t, ok := outs[name]
		if !ok {
			return fmt.Errorf("serve: the model returned no output %q", name)
		}
		data, err := encodeData(t)
		if err != nil {
			return err
		}
		resp.Outputs = append(resp.Outputs, kserveOutput{Name: name, Shape: t.Shape, Datatype: kserveType(t.DType), Data: data})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) outputNames(req kserveRequest) ([]string, error) {
	if len(req.Outputs) == 0 {
		names := make([]string, len(s.eng.Outputs))
		for i, o := range s.eng.Outputs {
			names[i] = o.Name
		}
		return names, nil
	}
	known := map[string]bool{}
	for _, o := range s.eng.Outputs {
		known[o.Name] = true
	}
	names := make([]string, 0, len(req.Outputs))
	for _, o := range req.Outputs {
		if !known[o.Name] {
			return nil, fmt.Errorf("%w: the model has no output %q", ErrBadRequest, o.Name)
		}
		names = append(names, o.Name)
	}
	return names, nil
}

// decodeInputs checks the request's inputs against the model's (every
// input once, dtype, rank, fixed dimensions, element count) and decodes
// their data.
func (s *Server) decodeInputs(in []kserveTensor) (map[string]*tensor.Tensor, error) {
	want := map[string]ort.IOInfo{}
	for _, io := range s.eng.Inputs {
		want[io.Name] = io
	}
	out := make(map[string]*tensor.Tensor, len(in))
	for _, t := range in {
		io, ok := want[t.Name]
		if !ok {
			return nil, fmt.Errorf("%w: the model has no input %q", ErrBadRequest, t.Name)
		}
		if _, dup := out[t.Name]; dup {
			return nil, fmt.Errorf("%w: input %q given twice", ErrBadRequest, t.Name)
		}
		dt, ok := kserveTypes[t.Datatype]
		if !ok || dt != io.DType {
			return nil, fmt.Errorf("%w: input %q: datatype %q, the model takes %s", ErrBadRequest, t.Name, t.Datatype, kserveType(io.DType))
		}
		if len(t.Shape) != len(io.Shape) {
			return nil, fmt.Errorf("%w: input %q: shape %v, the model takes rank %d %v", ErrBadRequest, t.Name, t.Shape, len(io.Shape), io.Shape)
		}
		for i, d := range t.Shape {
			if d <= 0 || (io.Shape[i] >= 0 && d != io.Shape[i]) {
				return nil, fmt.Errorf("%w: input %q: shape %v, the model takes %v (-1: any size)", ErrBadRequest, t.Name, t.Shape, io.Shape)
			}
		}
		n, err := tensor.NumElements(t.Shape)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: input %q: shape %v", ErrBadRequest, t.Name, t.Shape)
		}
		tt, err := decodeData(t.Data, dt, t.Shape, n)
		if err != nil {
			return nil, fmt.Errorf("%w: input %q: %v", ErrBadRequest, t.Name, err)
		}
		out[t.Name] = tt
	}
	for _, io := range s.eng.Inputs {
		if _, ok := out[io.Name]; !ok {
			return nil, fmt.Errorf("%w: missing input %q", ErrBadRequest, io.Name)
		}
	}
	return out, nil
}

// decodeData reads n numbers (flat or nested arrays) into a tensor of
// dtype, checking each fits.
func decodeData(raw json.RawMessage, dt tensor.DType, shape []int64, n int) (*tensor.Tensor, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("no data")
	}
	// Every element takes at least one byte of the body: a shape that
	// claims more is refused before anything is allocated for it.
	if n > len(raw) {
		return nil, fmt.Errorf("data of %d bytes cannot hold the %d elements of shape %v", len(raw), n, shape)
	}
	vals := make([]float64, 0, n)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if depth == 0 && len(vals) > 0 {
				break
			}
			return nil, fmt.Errorf("data: %v", err)
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '[':
				depth++
			case ']':
				depth--
			default:
				return nil, fmt.Errorf("data: objects are not tensor data")
			}
		case json.Number:
			if len(vals) == n {
				return nil, fmt.Errorf("data holds more than the %d elements of shape %v", n, shape)
			}
			f, err := v.Float64()
			if err != nil {
				return nil, fmt.Errorf("data: %v", err)
			}
			vals = append(vals, f)
		case bool:
			if dt != tensor.Bool {
				return nil, fmt.Errorf("data: a boolean in %s data", kserveType(dt))
			}
			b := 0.0
			if v {
				b = 1
			}
			vals = append(vals, b)
		default:
			return nil, fmt.Errorf("data: %T is not a number", tok)
		}
		if depth == 0 {
			break
		}
	}
	if len(vals) != n {
		return nil, fmt.Errorf("data holds %d elements, shape %v needs %d", len(vals), shape, n)
	}
	buf := make([]byte, n*dt.Size())
	for i, f := range vals {
		if err := putValue(buf, i, dt, f); err != nil {
			return nil, fmt.Errorf("element %d: %v", i, err)
		}
	}
	return tensor.New(dt, shape, buf)
}

// putValue stores f as element i of dtype dt, refusing values the dtype
// cannot hold (fractions or out of range for integers; overflow for
// floats; NaN and infinities cannot be written in JSON).
func putValue(b []byte, i int, dt tensor.DType, f float64) error {
	le := binary.LittleEndian
	intIn := func(lo, hi float64) error {
		if f != math.Trunc(f) || f < lo || f > hi {
			return fmt.Errorf("%v is not a %s", f, kserveType(dt))
		}
		return nil
	}
	switch dt {
	case tensor.Float32:
		if math.Abs(f) > math.MaxFloat32 {
			return fmt.Errorf("%v overflows FP32", f)
		}
		le.PutUint32(b[4*i:], math.Float32bits(float32(f)))
	case tensor.Float64:
		le.PutUint64(b[8*i:], math.Float64bits(f))
	case tensor.Float16:
		if math.Abs(f) > 65504 {
			return fmt.Errorf("%v overflows FP16", f)
		}
		le.PutUint16(b[2*i:], tensor.Float32ToFloat16(float32(f)))
	case tensor.BFloat16:
		if math.Abs(f) > math.MaxFloat32 {
			return fmt.Errorf("%v overflows BF16", f)
		}
		le.PutUint16(b[2*i:], tensor.Float32ToBFloat16(float32(f)))
	case tensor.Bool:
		if f != 0 && f != 1 {
			return fmt.Errorf("%v is not a BOOL", f)
		}
		b[i] = byte(f)
	case tensor.Uint8:
		if err := intIn(0, math.MaxUint8); err != nil {
			return err
		}
		b[i] = byte(f)
	case tensor.Int8:
		if err := intIn(math.MinInt8, math.MaxInt8); err != nil {
			return err
		}
		b[i] = byte(int8(f))
	case tensor.Uint16:
		if err := intIn(0, math.MaxUint16); err != nil {
			return err
		}
		le.PutUint16(b[2*i:], uint16(f))
	case tensor.Int16:
		if err := intIn(math.MinInt16, math.MaxInt16); err != nil {
			return err
		}
		le.PutUint16(b[2*i:], uint16(int16(f)))
	case tensor.Uint32:
		if err := intIn(0, math.MaxUint32); err != nil {
			return err
		}
		le.PutUint32(b[4*i:], uint32(f))
	case tensor.Int32:
		if err := intIn(math.MinInt32, math.MaxInt32); err != nil {
			return err
		}
		le.PutUint32(b[4*i:], uint32(int32(f)))
	case tensor.Int64:
		// JSON numbers are read as float64, exact only below 2^53 in
		// magnitude: 2^53 itself is also what 2^53+1 reads as.
		if err := intIn(-(1<<53 - 1), 1<<53-1); err != nil {
			return err
		}
		le.PutUint64(b[8*i:], uint64(int64(f)))
	case tensor.Uint64:
		if err := intIn(0, 1<<53-1); err != nil {
			return err
		}
		le.PutUint64(b[8*i:], uint64(f))
	default:
		return fmt.Errorf("datatype %s is not supported", kserveType(dt))
	}
	return nil
}

// encodeData returns t's elements as a flat slice JSON encodes as numbers
// (float32 values keep their shortest exact decimal form, so a client
// reading them as float32 gets the bits back).
func encodeData(t *tensor.Tensor) (any, error) {
	n := t.NumElements()
	le := binary.LittleEndian
	b := t.Data
	switch t.DType {
	case tensor.Float32:
		out := make(f32s, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return out, nil
	case tensor.Float16, tensor.BFloat16:
		out := make(f32s, n)
		for i := range out {
			h := le.Uint16(b[2*i:])
			if t.DType == tensor.BFloat16 {
				out[i] = tensor.BFloat16ToFloat32(h)
			} else {
				out[i] = tensor.Float16ToFloat32(h)
			}
		}
		return out, nil
	case tensor.Float64:
		out := make(f64s, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return out, nil
	case tensor.Int64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
		return out, nil
	case tensor.Int32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(b[4*i:]))
		}
		return out, nil
	case tensor.Uint8, tensor.Bool:
		out := make([]int, n)
		for i := range out {
			out[i] = int(b[i])
		}
		return out, nil
	case tensor.Int8:
		out := make([]int, n)
		for i := range out {
			out[i] = int(int8(b[i]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("serve: output datatype %s is not supported", kserveType(t.DType))
}

// f32s encodes float32 values in their shortest decimal form that reads
// back as the same float32 (a client parsing them as float32 gets the
// bits back); NaN and infinities, which JSON cannot hold, become null.
type f32s []float32

// MarshalJSON implements json.Marshaler.
func (v f32s) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(v)*12)
	b = append(b, '[')
	for i, f := range v {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
	}
	return append(b, ']'), nil
}

// f64s encodes float64 values as encoding/json does, except that NaN and
// infinities, which JSON cannot hold (encoding/json fails on them), become
// null as in f32s.
type f64s []float64

// MarshalJSON implements json.Marshaler.
func (v f64s) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(v)*20)
	b = append(b, '[')
	for i, f := range v {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, f, 'g', -1, 64)
	}
	return append(b, ']'), nil
}
