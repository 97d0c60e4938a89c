package ortshim_test

import (
	"slices"
	"testing"

	onnxruntime "github.com/yalue/onnxruntime_go"

	"github.com/shira-ort/shira-ort/internal/ortshim"
	"github.com/shira-ort/shira-ort/internal/orttest"
)

func TestProvidersAndSymbols(t *testing.T) {
	orttest.Require(t)
	avail, err := ortshim.AvailableProviders()
	if err != nil || !slices.Contains(avail, "CPUExecutionProvider") {
		t.Fatalf("AvailableProviders() = %v, %v", avail, err)
	}
	if !ortshim.HasSymbol("OrtGetApiBase") || ortshim.HasSymbol("NoSuchSymbolInORT") {
		t.Fatal("HasSymbol is wrong")
	}
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	found, err := ortshim.AppendNnapi(ortshim.SessionOptionsPtr(so), 0)
	if found != ortshim.HasSymbol(ortshim.NnapiSymbol) {
		t.Fatalf("AppendNnapi found=%v, err=%v", found, err)
	}
	t.Logf("providers %v, NNAPI symbol %v", avail, found)
}

func TestLoraAdapterFromArrayRejectsGarbage(t *testing.T) {
	orttest.Require(t)
	if a, err := ortshim.CreateLoraAdapterFromArray([]byte("not an adapter file at all")); err == nil {
		ortshim.ReleaseLoraAdapter(a)
		t.Fatal("garbage accepted")
	} else {
		t.Log(err)
	}
	if _, err := ortshim.CreateLoraAdapterFromArray(nil); err == nil {
		t.Fatal("empty accepted")
	}
}
