package adapter

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// verifierSlots is every vtable slot constant of verify.go, keyed by the
// generated accessor's "Table.Field".
var verifierSlots = map[string]int{
	"Adapter.FormatVersion":    slotAdapterFormatVersion,
	"Adapter.Name":             slotAdapterName,
	"Adapter.DefaultAlpha":     slotAdapterDefaultAlpha,
	"Adapter.Semantics":        slotAdapterSemantics,
	"Adapter.ModelFingerprint": slotAdapterModelFingerprint,
	"Adapter.Metadata":         slotAdapterMetadata,
	"Adapter.Tensors":          slotAdapterTensors,

	"KeyValue.Key":   slotKeyValueKey,
	"KeyValue.Value": slotKeyValueValue,

	"Tensor.Name":          slotTensorName,
	"Tensor.Shape":         slotTensorShape,
	"Tensor.Dtype":         slotTensorDType,
	"Tensor.ValueDtype":    slotTensorValueDType,
	"Tensor.BaseSha256":    slotTensorBaseSHA256,
	"Tensor.IndexEncoding": slotTensorIndexEncoding,
	"Tensor.Indices":       slotTensorIndices,
	"Tensor.Values":        slotTensorValues,
	"Tensor.IndexGaps":     slotTensorIndexGaps,
}

// TestVerifierSlotsMatchGeneratedCode keeps verify.go's hand-copied slot
// numbers equal to those of the flatc-generated code in internal/shirafb:
// it parses that code and takes, for every field, the vtable offset its
// accessors read (rcv._tab.Offset(N)) and the slot its builder writes
// (TableAddField: builder.Prepend…Slot(k, …), offset 4+2k). Every
// generated field must have a verifier slot, so a field added to the
// schema (and regenerated) fails here until the verifier knows it.
func TestVerifierSlotsMatchGeneratedCode(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("internal", "shirafb", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no generated code found: %v", err)
	}
	read := map[string]map[int]bool{}  // Table.Field -> offsets its accessors read
	wrote := map[string]map[int]bool{} // Table.Field -> offsets its builder writes
	add := func(m map[string]map[int]bool, key string, off int) {
		if m[key] == nil {
			m[key] = map[int]bool{}
		}
		m[key][off] = true
	}
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			name := fn.Name.Name
			if fn.Recv != nil {
				star, ok := fn.Recv.List[0].Type.(*ast.StarExpr) // tables; enums have value receivers
				if !ok || strings.HasPrefix(name, "Mutate") {
					continue
				}
				table := star.X.(*ast.Ident).Name
				field := strings.TrimSuffix(strings.TrimSuffix(name, "Length"), "Bytes")
				if off, ok := firstIntArg(fn.Body, "Offset"); ok {
					add(read, table+"."+field, off)
				}
				continue
			}
			// func TableAddField(builder *flatbuffers.Builder, x T) { builder.Prepend…Slot(k, x, d) }
			if table, field, ok := strings.Cut(name, "Add"); ok && fn.Recv == nil {
				if k, ok := firstIntArg(fn.Body, "Slot"); ok {
					add(wrote, table+"."+field, 4+2*k)
				}
			}
		}
	}
	if !slices.Equal(slices.Sorted(maps.Keys(read)), slices.Sorted(maps.Keys(wrote))) {
		t.Errorf("accessor fields %v, builder fields %v", slices.Sorted(maps.Keys(read)), slices.Sorted(maps.Keys(wrote)))
	}
	for _, key := range slices.Sorted(maps.Keys(read)) {
		want, ok := verifierSlots[key]
		if !ok {
			t.Errorf("%s: generated accessor reads vtable offset %v, but verify.go has no slot for it", key, slices.Sorted(maps.Keys(read[key])))
			continue
		}
		if len(read[key]) != 1 || !read[key][want] {
			t.Errorf("%s: verify.go's slot is %d, the generated accessors read %v", key, want, slices.Sorted(maps.Keys(read[key])))
		}
		if len(wrote[key]) != 1 || !wrote[key][want] {
			t.Errorf("%s: verify.go's slot is %d, the generated builder writes %v", key, want, slices.Sorted(maps.Keys(wrote[key])))
		}
	}
	for key := range verifierSlots {
		if read[key] == nil {
			t.Errorf("verify.go has a slot for %s, which the generated code does not have", key)
		}
	}
}

// firstIntArg returns the integer literal first argument of the first
// call in body to a function or method whose name ends in suffix.
func firstIntArg(body *ast.BlockStmt, suffix string) (int, bool) {
	n, found := 0, false
	ast.Inspect(body, func(node ast.Node) bool {
		call, ok := node.(*ast.CallExpr)
		if found || !ok || len(call.Args) == 0 {
			return !found
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || !strings.HasSuffix(sel.Sel.Name, suffix) {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.INT {
			return true
		}
		n, _ = strconv.Atoi(lit.Value)
		found = true
		return false
	})
	return n, found
}
