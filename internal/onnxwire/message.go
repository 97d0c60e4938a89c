package onnxwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed reports bytes that are not a valid protobuf message.
var ErrMalformed = errors.New("onnxwire: malformed protobuf")

// MaxDepth is how deep messages may nest: a message nested more than
// MaxDepth levels below the one Parse was given (the ModelProto, for
// ParseModel) is refused with ErrTooDeep. It is protobuf's default
// recursion limit, which ONNX Runtime keeps ("Protobuf parsing failed"),
// so every model ONNX Runtime loads is read. Each If/Loop/Scan subgraph
// level takes three (node, attribute, graph): about 30 levels of nested
// subgraphs are possible.
const MaxDepth = 100

const _ = uint8(MaxDepth) // Field.depth holds it

// ErrTooDeep reports messages nested more than MaxDepth levels deep. It
// wraps ErrMalformed. Reading stops at the limit: the levels below it are
// never parsed, so deep input costs no more than shallow input.
var ErrTooDeep = fmt.Errorf("%w: messages nested more than %d levels deep (protobuf's and ONNX Runtime's limit)", ErrMalformed, MaxDepth)

// Field is one occurrence of a field in a message: its number, wire type,
// the original encoding and, for length-delimited fields that were asked
// for as a message, the parsed sub-message.
type Field struct {
	Num  protowire.Number
	Type protowire.Type
	enc  []byte   // the whole field as read (tag + value); nil for built fields with msg set
	val  []byte   // the value: varint/fixed bytes, or the payload of a bytes field
	msg  *Message // lazily parsed sub-message (BytesType only)
	// depth is the nesting depth of the message holding the field (0 for
	// the message Parse was given and for built fields); at most MaxDepth
	depth uint8
}

// Message is a protobuf message kept as an ordered list of raw fields.
// The zero value is an empty message.
type Message struct {
	fields []*Field
	dirty  bool
}

// Parse splits b into fields without copying: the message aliases b, so b
// must not change while the message is in use. Sub-messages are parsed
// when asked for (Field.Message), at most MaxDepth levels below b.
func Parse(b []byte) (*Message, error) { return parse(b, 0) }

// parse is Parse for a message at the given nesting depth.
func parse(b []byte, depth uint8) (*Message, error) {
	m := &Message{}
	for len(b) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(tagLen))
		}
		n := protowire.ConsumeFieldValue(num, typ, b[tagLen:])
		if n < 0 {
			return nil, fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
		}
		f := &Field{Num: num, Type: typ, enc: b[:tagLen+n], val: b[tagLen : tagLen+n], depth: depth}
		if typ == protowire.BytesType {
			v, vn := protowire.ConsumeBytes(b[tagLen:])
			if vn < 0 {
				return nil, fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(vn))
			}
			f.val = v
		}
		m.fields = append(m.fields, f)
		b = b[tagLen+n:]
	}
	return m, nil
}

// Fields returns the fields in wire order. The slice must not be modified;
// use the edit methods instead.
func (m *Message) Fields() []*Field { return m.fields }

// Modified reports whether m or any parsed sub-message was edited since it
// was parsed.
func (m *Message) Modified() bool {
	if m.dirty {
		return true
	}
	for _, f := range m.fields {
		if f.msg != nil && (f.enc == nil || f.msg.Modified()) {
			return true
		}
	}
	return false
}

// Size returns the encoded size of m in bytes.
func (m *Message) Size() int {
	n := 0
	for _, f := range m.fields {
		n += f.size()
	}
	return n
}

func (f *Field) reencode() bool { return f.msg != nil && (f.enc == nil || f.msg.Modified()) }

func (f *Field) size() int {
	if !f.reencode() {
		if f.enc != nil {
			return len(f.enc)
		}
		return protowire.SizeTag(f.Num) + f.valueSize()
	}
	s := f.msg.Size()
	return protowire.SizeTag(f.Num) + protowire.SizeBytes(s)
}

func (f *Field) valueSize() int {
	if f.Type == protowire.BytesType {
		return protowire.SizeBytes(len(f.val))
	}
	return len(f.val)
}

// Encode returns the encoding of m. Untouched fields are copied byte for
// byte from the parsed input.
func (m *Message) Encode() []byte { return m.AppendTo(make([]byte, 0, m.Size())) }

// AppendTo appends the encoding of m to b.
func (m *Message) AppendTo(b []byte) []byte {
	for _, f := range m.fields {
		b = f.appendTo(b)
	}
	return b
}

func (f *Field) appendTo(b []byte) []byte {
	switch {
	case f.reencode():
		b = protowire.AppendTag(b, f.Num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(f.msg.Size()))
		return f.msg.AppendTo(b)
	case f.enc != nil:
		return append(b, f.enc...)
	default:
		b = protowire.AppendTag(b, f.Num, f.Type)
		if f.Type == protowire.BytesType {
			b = protowire.AppendVarint(b, uint64(len(f.val)))
		}
		return append(b, f.val...)
	}
}

// WriteTo streams the encoding of m to w without building it in memory
// (large raw_data payloads are written straight from the parsed input).
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	if err := m.writeTo(cw); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (m *Message) writeTo(w io.Writer) error {
	var hdr []byte
	for _, f := range m.fields {
		var err error
		switch {
		case f.reencode():
			hdr = protowire.AppendTag(hdr[:0], f.Num, protowire.BytesType)
			hdr = protowire.AppendVarint(hdr, uint64(f.msg.Size()))
			if _, err = w.Write(hdr); err == nil {
				err = f.msg.writeTo(w)
			}
		case f.enc != nil:
			_, err = w.Write(f.enc)
		default:
			hdr = protowire.AppendTag(hdr[:0], f.Num, f.Type)
			if f.Type == protowire.BytesType {
				hdr = protowire.AppendVarint(hdr, uint64(len(f.val)))
			}
			if _, err = w.Write(hdr); err == nil {
				_, err = w.Write(f.val)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Get returns the last occurrence of field num (protobuf's rule for
// singular fields), or nil.
func (m *Message) Get(num protowire.Number) *Field {
	for i := len(m.fields) - 1; i >= 0; i-- {
		if m.fields[i].Num == num {
			return m.fields[i]
		}
	}
	return nil
}

// Has reports whether field num occurs in m.
func (m *Message) Has(num protowire.Number) bool { return m.Get(num) != nil }

// Remove deletes every occurrence of the given field numbers and reports
// how many fields were removed.
func (m *Message) Remove(nums ...protowire.Number) int {
	return m.RemoveFunc(func(f *Field) bool {
		for _, n := range nums {
			if f.Num == n {
				return true
			}
		}
		return false
	})
}

// RemoveFunc deletes every field for which drop returns true.
func (m *Message) RemoveFunc(drop func(*Field) bool) int {
	kept := m.fields[:0]
	removed := 0
	for _, f := range m.fields {
		if drop(f) {
			removed++
			continue
		}
		kept = append(kept, f)
	}
	for i := len(kept); i < len(m.fields); i++ {
		m.fields[i] = nil
	}
	m.fields = kept
	if removed > 0 {
		m.dirty = true
	}
	return removed
}

// RemoveMessage deletes the field whose parsed sub-message is sub and
// reports whether it was found.
func (m *Message) RemoveMessage(sub *Message) bool {
	return m.RemoveFunc(func(f *Field) bool { return f.msg == sub && sub != nil }) > 0
}

// ReplaceMessage puts nw, as field num, where the field num holding old
// was (keeping the fields' order), and reports whether old was found.
func (m *Message) ReplaceMessage(num protowire.Number, old, nw *Message) bool {
	for _, f := range m.fields {
		if f.Num == num && f.msg == old {
			return m.Replace(f, MessageField(num, nw))
		}
	}
	return false
}

// Append adds f at the end of m.
func (m *Message) Append(f *Field) {
	m.fields = append(m.fields, f)
	m.dirty = true
}

// Insert adds f at position i of the field list (0 = first).
func (m *Message) Insert(i int, f *Field) {
	m.fields = append(m.fields, nil)
	copy(m.fields[i+1:], m.fields[i:])
	m.fields[i] = f
	m.dirty = true
}

// InsertAfterLast adds f right after the last occurrence of field f.Num
// (so repeated fields stay together), or at the end when there is none.
func (m *Message) InsertAfterLast(f *Field) {
	for i := len(m.fields) - 1; i >= 0; i-- {
		if m.fields[i].Num == f.Num {
			m.Insert(i+1, f)
			return
		}
	}
	m.Append(f)
}

// Set replaces the last occurrence of field f.Num with f (dropping earlier
// occurrences too) keeping its position, or appends f when absent.
func (m *Message) Set(f *Field) {
	last := -1
	for i, g := range m.fields {
		if g.Num == f.Num {
			last = i
		}
	}
	if last < 0 {
		m.Append(f)
		return
	}
	m.fields[last] = f
	m.RemoveFunc(func(g *Field) bool { return g.Num == f.Num && g != f })
	m.dirty = true
}

// Replace puts nf in the position of old and reports whether old was found.
func (m *Message) Replace(old, nf *Field) bool {
	for i, g := range m.fields {
		if g == old {
			m.fields[i] = nf
			m.dirty = true
			return true
		}
	}
	return false
}

// SetVarint sets singular varint field num to v.
func (m *Message) SetVarint(num protowire.Number, v uint64) { m.Set(VarintField(num, v)) }

// SetString sets singular string field num to v.
func (m *Message) SetString(num protowire.Number, v string) { m.Set(BytesField(num, []byte(v))) }

// VarintField builds a varint field.
func VarintField(num protowire.Number, v uint64) *Field {
	return &Field{Num: num, Type: protowire.VarintType, val: protowire.AppendVarint(nil, v)}
}

// BytesField builds a length-delimited field holding v (not copied).
func BytesField(num protowire.Number, v []byte) *Field {
	return &Field{Num: num, Type: protowire.BytesType, val: v}
}

// StringField builds a string field.
func StringField(num protowire.Number, v string) *Field { return BytesField(num, []byte(v)) }

// Fixed32Field builds a fixed32 field (floats).
func Fixed32Field(num protowire.Number, v uint32) *Field {
	return &Field{Num: num, Type: protowire.Fixed32Type, val: protowire.AppendFixed32(nil, v)}
}

// MessageField builds a field holding sub-message sub, encoded from sub on output.
func MessageField(num protowire.Number, sub *Message) *Field {
	return &Field{Num: num, Type: protowire.BytesType, msg: sub}
}

// Bytes returns the payload of a length-delimited field, or the raw value
// bytes of other wire types. For a built message field it encodes the message.
func (f *Field) Bytes() []byte {
	if f.reencode() {
		return f.msg.Encode()
	}
	return f.val
}

// Str returns the payload as a string.
func (f *Field) Str() string { return string(f.Bytes()) }

// Uint64 decodes a varint, fixed32 or fixed64 value.
func (f *Field) Uint64() (uint64, error) {
	switch f.Type {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(f.val)
		if n < 0 {
			return 0, fmt.Errorf("%w: field %d: %v", ErrMalformed, f.Num, protowire.ParseError(n))
		}
		return v, nil
	case protowire.Fixed32Type:
		v, _ := protowire.ConsumeFixed32(f.val)
		return uint64(v), nil
	case protowire.Fixed64Type:
		v, _ := protowire.ConsumeFixed64(f.val)
		return v, nil
	}
	return 0, fmt.Errorf("%w: field %d has wire type %d, want a number", ErrMalformed, f.Num, f.Type)
}

// Int64 decodes an int64/int32/enum varint (two's complement, not zigzag).
func (f *Field) Int64() (int64, error) {
	v, err := f.Uint64()
	return int64(v), err
}

// Float32 decodes a fixed32 float.
func (f *Field) Float32() (float32, error) {
	if f.Type != protowire.Fixed32Type {
		return 0, fmt.Errorf("%w: field %d has wire type %d, want fixed32", ErrMalformed, f.Num, f.Type)
	}
	v, _ := protowire.ConsumeFixed32(f.val)
	return math.Float32frombits(v), nil
}

// Message returns the field parsed as a sub-message. The result is cached,
// so edits made through it are seen when the parent is encoded. A
// sub-message more than MaxDepth levels below the parsed top is refused
// (ErrTooDeep).
func (f *Field) Message() (*Message, error) {
	if f.msg != nil {
		return f.msg, nil
	}
	if f.Type != protowire.BytesType {
		return nil, fmt.Errorf("%w: field %d has wire type %d, want a message", ErrMalformed, f.Num, f.Type)
	}
	if f.depth >= MaxDepth {
		return nil, fmt.Errorf("field %d: %w", f.Num, ErrTooDeep)
	}
	sub, err := parse(f.val, f.depth+1)
	if err != nil {
		return nil, fmt.Errorf("field %d: %w", f.Num, err)
	}
	f.msg = sub
	return sub, nil
}

// getString returns the last value of string field num ("" when absent).
func (m *Message) getString(num protowire.Number) string {
	if f := m.Get(num); f != nil {
		return f.Str()
	}
	return ""
}

// getInt returns the last value of varint field num (def when absent).
func (m *Message) getInt(num protowire.Number, def int64) (int64, error) {
	f := m.Get(num)
	if f == nil {
		return def, nil
	}
	return f.Int64()
}

// strings returns every value of repeated string field num.
func (m *Message) strings(num protowire.Number) []string {
	var out []string
	for _, f := range m.fields {
		if f.Num == num {
			out = append(out, f.Str())
		}
	}
	return out
}

// Int64s decodes every value of repeated int64 field num, packed or not.
func (m *Message) Int64s(num protowire.Number) ([]int64, error) {
	var out []int64
	for _, f := range m.fields {
		if f.Num != num {
			continue
		}
		switch f.Type {
		case protowire.VarintType:
			v, err := f.Int64()
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		case protowire.BytesType:
			b := f.val
			for len(b) > 0 {
				v, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return nil, fmt.Errorf("%w: packed field %d: %v", ErrMalformed, num, protowire.ParseError(n))
				}
				out = append(out, int64(v))
				b = b[n:]
			}
		default:
			return nil, fmt.Errorf("%w: field %d has wire type %d, want varint", ErrMalformed, num, f.Type)
		}
	}
	return out, nil
}

// messages parses every occurrence of field num as a sub-message.
func (m *Message) messages(num protowire.Number) ([]*Message, error) {
	var out []*Message
	for _, f := range m.fields {
		if f.Num != num {
			continue
		}
		sub, err := f.Message()
		if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	return out, nil
}
