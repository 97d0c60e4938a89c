package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/adapter"
)

// TestCreateIndexEncoding: create writes flat-u32 by default and gap-u16
// on request; both files decode to the same adapter, the gap file is
// smaller, and an unknown encoding is refused before anything is written.
func TestCreateIndexEncoding(t *testing.T) {
	tmp, _, dir := exportTiny(t)
	flat, gap := filepath.Join(tmp, "flat.shira"), filepath.Join(tmp, "gap.shira")
	args := []string{"create", "--model", dir, "--density", "0.05", "--seed", "2"}
	mustCLI(t, append(args, "-o", flat)...)
	mustCLI(t, append(args, "--index-encoding", "gap-u16", "-o", gap)...)
	a, err := adapter.Open(flat)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := adapter.Open(gap)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(a.Tensors) == 0 || len(a.Tensors) != len(b.Tensors) {
		t.Fatalf("flat-u32 file has %d tensors, gap-u16 file %d", len(a.Tensors), len(b.Tensors))
	}
	for i := range a.Tensors {
		if a.Tensors[i].Name != b.Tensors[i].Name || !reflect.DeepEqual(a.Tensors[i].Indices, b.Tensors[i].Indices) ||
			string(a.Tensors[i].Values) != string(b.Tensors[i].Values) {
			t.Fatalf("tensor %s differs between the encodings", a.Tensors[i].Name)
		}
	}
	fs, _ := os.Stat(flat)
	gs, _ := os.Stat(gap)
	if gs.Size() >= fs.Size() {
		t.Fatalf("gap-u16 file %d bytes, flat-u32 %d: the flag did nothing", gs.Size(), fs.Size())
	}
	bad := filepath.Join(tmp, "bad.shira")
	out, err := runCLI(t, append(args, "--index-encoding", "zip", "-o", bad)...)
	if err == nil || !strings.Contains(out+err.Error(), "flat-u32 or gap-u16") {
		t.Fatalf("unknown encoding: err %v, output %q", err, out)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a file was written despite the bad flag")
	}
}
