package ortshim_test

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shira-ort/shira-ort/internal/ortadapter"
	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestProvidersAndSymbols checks the provider calls against what the
// loaded build has (GetAvailableProviders). On a build without NNAPI
// (desktop builds such as the one tests run on: the symbol is Android-only)
// AppendNnapi must report not-found with a nil error; on one with NNAPI,
// appending with no flags must succeed. Providers the build lacks are
// refused by the generic append (and CoreML without its symbol), and the
// options must still create a working session afterwards.
func TestProvidersAndSymbols(t *testing.T) {
	orttest.Require(t)
	avail, err := ortshim.AvailableProviders()
	if err != nil || !slices.Contains(avail, "CPUExecutionProvider") {
		t.Fatalf("AvailableProviders() = %v, %v", avail, err)
	}
	if !ortshim.HasSymbol("OrtGetApiBase") || ortshim.HasSymbol("NoSuchSymbolInORT") {
		t.Fatal("HasSymbol is wrong")
	}
	so, err := ortshim.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Release()

	hasNnapi := slices.Contains(avail, "NnapiExecutionProvider")
	found, err := so.AppendNnapi(0)
	switch {
	case !found: // desktop builds, this one included: nothing was called
		if err != nil {
			t.Fatalf("AppendNnapi without the symbol: err = %v", err)
		}
		if hasNnapi {
			t.Fatalf("NnapiExecutionProvider is available but %s was not found", ortshim.NnapiSymbol)
		}
	case hasNnapi: // Android builds
		if err != nil {
			t.Fatalf("AppendNnapi(0) on a build with NNAPI: %v", err)
		}
	default: // an exported stub must refuse
		if err == nil {
			t.Fatalf("%s appended NNAPI on a build without NnapiExecutionProvider", ortshim.NnapiSymbol)
		}
	}

	if !slices.Contains(avail, "XnnpackExecutionProvider") {
		if err := so.AppendExecutionProvider("XNNPACK", map[string]string{"intra_op_num_threads": "1"}); err == nil {
			t.Fatal("XNNPACK appended on a build without it")
		} else {
			t.Logf("XNNPACK: %v", err)
		}
	}
	if !ortshim.HasSymbol(ortshim.CoreMLSymbol) {
		if err := so.AppendCoreML(nil); err == nil {
			t.Fatal("CoreML appended without its symbol")
		}
	}
	if err := so.AppendExecutionProvider("NoSuchProvider", nil); err == nil {
		t.Fatal("unknown provider appended")
	}

	// The options still create a working (CPU) session.
	s, err := ortshim.NewSession(mlpModel, so)
	if err != nil {
		t.Fatalf("session with the options after the refused appends: %v", err)
	}
	defer s.Release()
	runMLP(t, s, nil)
	t.Logf("providers %v, NNAPI symbol %v", avail, found)
}

func TestLoraAdapterFromArrayRejectsGarbage(t *testing.T) {
	orttest.Require(t)
	if a, err := ortshim.NewLoraAdapterFromArray([]byte("not an adapter file at all")); err == nil {
		a.Release()
		t.Fatal("garbage accepted")
	} else {
		t.Log(err)
	}
	if _, err := ortshim.NewLoraAdapterFromArray(nil); err == nil {
		t.Fatal("empty accepted")
	}
	if _, err := ortshim.NewLoraAdapter(filepath.Join(t.TempDir(), "missing.onnx_adapter")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestLoraAdapter: an adapter from a file and one from the same bytes
// replace W1 for the Runs that activate them; Release is safe twice and on
// nil, and a released adapter cannot be activated.
func TestLoraAdapter(t *testing.T) {
	orttest.Require(t)
	data, err := ortadapter.Encode(&ortadapter.Adapter{Parameters: []ortadapter.Parameter{
		{Name: "W1", DType: tensor.Float32, Dims: []int64{8, 16}, Data: make([]byte, 8*16*4)}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "zero.onnx_adapter")
	if err := ortadapter.Write(path, &ortadapter.Adapter{Parameters: []ortadapter.Parameter{
		{Name: "W1", DType: tensor.Float32, Dims: []int64{8, 16}, Data: make([]byte, 8*16*4)}}}); err != nil {
		t.Fatal(err)
	}
	fromFile, err := ortshim.NewLoraAdapter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fromFile.Release()
	fromBytes, err := ortshim.NewLoraAdapterFromArray(data)
	if err != nil {
		t.Fatal(err)
	}
	defer fromBytes.Release()

	s, err := ortshim.NewSession(mlpModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	base := runMLP(t, s, nil)
	var outs [][]byte
	for _, a := range []*ortshim.LoraAdapter{fromFile, fromBytes} {
		ro, err := ortshim.NewRunOptions(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ro.AddActiveLoraAdapter(a); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, runMLP(t, s, ro))
		ro.Release()
	}
	if bytes.Equal(outs[0], base) || !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("the adapters did not both replace W1")
	}
	if !bytes.Equal(runMLP(t, s, nil), base) {
		t.Fatal("a Run without the adapter saw it")
	}

	fromBytes.Release()
	fromBytes.Release()
	ro, err := ortshim.NewRunOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Release()
	if err := ro.AddActiveLoraAdapter(fromBytes); err == nil {
		t.Fatal("released adapter activated")
	}
	if err := ro.AddActiveLoraAdapter(nil); err == nil {
		t.Fatal("nil adapter activated")
	}
}
