package ort

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/ortadapter"
)

func TestNewLoraAdapterFromBytes(t *testing.T) {
	requireORT(t)
	s := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive})
	in := mlpInput(t, 2, 3)
	base := mustRun(t, s, in)["Y"].Data
	w2 := append([]byte(nil), weightBytes(t, s, "W2")...)
	for i := range w2 {
		w2[i] = 0 // zero weights: +0.0 bit patterns
	}
	data, err := ortadapter.Encode(&ortadapter.Adapter{Parameters: []ortadapter.Parameter{
		{Name: "W2", DType: s.byName["W2"].info.DType, Dims: s.byName["W2"].info.Shape, Data: w2}}})
	if err != nil {
		t.Fatal(err)
	}
	la, err := NewLoraAdapter(data)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	got, err := s.RunLoRA(context.Background(), in, la)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got["Y"].Data, base) {
		t.Fatal("adapter with zero W2 did not change Y")
	}
	// Refused where the weights are not graph inputs.
	b := mustOpen(t, testdata("mlp"), &Options{Mode: ModeBaked})
	if _, err := b.RunLoRA(context.Background(), in, la); err == nil || !strings.Contains(err.Error(), "live") {
		t.Fatalf("baked RunLoRA: %v", err)
	}
	f := mustOpen(t, testdata("mlp"), &Options{Mode: ModeLive, WeightBinding: FeedEachRun})
	if _, err := f.RunLoRA(context.Background(), in, la); err == nil {
		t.Fatal("FeedEachRun RunLoRA accepted")
	}
	if _, err := NewLoraAdapter([]byte("garbage")); err == nil {
		t.Fatal("garbage adapter accepted")
	}
}
