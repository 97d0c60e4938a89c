package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestOverlapOverwriteNeedsModel: overlap of an overwrite-semantics adapter
// without --model says to give --model, and works with it.
func TestOverlapOverwriteNeedsModel(t *testing.T) {
	tmp, _, dir := exportTiny(t)
	a, b := filepath.Join(tmp, "a.shira"), filepath.Join(tmp, "b.shira")
	mustCLI(t, "create", "--model", dir, "--density", "0.1", "--seed", "1", "-o", a)
	mustCLI(t, "create", "--model", dir, "--density", "0.1", "--seed", "2", "--semantics", "overwrite", "-o", b)
	if _, err := runCLI(t, "overlap", a, b); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Fatalf("overlap of an overwrite adapter without --model: %v", err)
	}
	if out := mustCLI(t, "overlap", a, b, "--model", dir); !strings.Contains(out, "(overall)") {
		t.Fatalf("overlap --model:\n%s", out)
	}
}

// TestInspectJSONKeys: `inspect --json DIR` spells the graph's inputs and
// outputs like the manifest (snake_case keys).
func TestInspectJSONKeys(t *testing.T) {
	_, _, dir := exportTiny(t)
	var got struct {
		Fingerprint string `json:"fingerprint"`
		Inputs      []map[string]any
		Outputs     []map[string]any
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "inspect", "--json", dir)), &got); err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint == "" || len(got.Inputs) != 1 || len(got.Outputs) != 1 {
		t.Fatalf("inspect --json: %+v", got)
	}
	in := got.Inputs[0]
	if in["name"] != "x" || in["dtype"] != "float32" || in["shape"] == nil || in["symbolic_dims"] == nil || in["Name"] != nil {
		t.Fatalf("input x in inspect --json: %v", in)
	}
}

// TestRunShowsInputsOnBadInput: when run's inputs do not fit the model, the
// error wraps ort.ErrInput and lists the model's inputs with their dtypes
// and shapes.
func TestRunShowsInputsOnBadInput(t *testing.T) {
	orttest.Require(t)
	tmp, _, dir := exportTiny(t)
	x, err := tensor.FromFloat32([]int64{2, 16}, make([]float32, 32))
	if err != nil {
		t.Fatal(err)
	}
	xPath := filepath.Join(tmp, "x.npy")
	if err := npyfile.WriteFile(xPath, x); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out")
	for _, args := range [][]string{{"--input", "X=" + xPath}, nil} {
		_, err := runCLI(t, append([]string{"run", "--model", dir, "--output-dir", out}, args...)...)
		if !errors.Is(err, ort.ErrInput) || !strings.Contains(err.Error(), "\n  x: float32 [batch 16]") {
			t.Errorf("run %v: %v; want ort.ErrInput listing x: float32 [batch 16]", args, err)
		}
	}
	mustCLI(t, "run", "--model", dir, "--output-dir", out, "--input", "x="+xPath)
}

// TestCreateRefusesNonFiniteOptions: create with a NaN or infinite
// --scale, --density or --alpha fails with an error naming it and writes
// nothing.
func TestCreateRefusesNonFiniteOptions(t *testing.T) {
	tmp, _, dir := exportTiny(t)
	out := filepath.Join(tmp, "n.shira")
	for _, c := range []struct{ flag, value, want string }{
		{"--scale", "NaN", "scale NaN"}, {"--scale", "Inf", "scale +Inf"}, {"--scale", "-Inf", "scale -Inf"},
		{"--density", "NaN", "density NaN"}, {"--alpha", "Inf", "alpha +Inf"},
	} {
		_, err := runCLI(t, "create", "--model", dir, c.flag, c.value, "-o", out)
		if err == nil || !strings.Contains(err.Error(), c.want+" is not finite") {
			t.Errorf("create %s %s: %v, want an error saying %s is not finite", c.flag, c.value, err, c.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("create %s %s wrote %s", c.flag, c.value, out)
		}
	}
}

// TestServeSlotsFlags: serve refuses a negative --slots and more
// --concurrency than slots before preparing anything.
func TestServeSlotsFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "charlm")
	for _, args := range [][]string{{"--slots", "-1"}, {"--slots", "2", "--concurrency", "3"}} {
		_, err := runCLI(t, append([]string{"serve", "--charlm", dir}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "--slots") {
			t.Errorf("serve %v: %v, want an error naming --slots", args, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused flags still prepared %s: %v", dir, err)
	}
}
