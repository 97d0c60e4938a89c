//go:build unix

package onnxwire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/onnxwire/onnxwiretest"
	"github.com/shira-ort/shira-ort/tensor"
)

func externalTensor(loc string) *Tensor {
	return TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{2, 2},
		External: &ExternalData{Location: loc, Length: -1}}.Tensor()
}

// TestExternalDataConfined: external data is read only from regular files
// inside the model directory after every symbolic link is followed (as
// ONNX Runtime does); symlinks that stay inside are followed.
func TestExternalDataConfined(t *testing.T) {
	dir := onnxwiretest.UntrustedDir(t)
	for _, loc := range []string{"data/w.bin", "in.bin", "inabs.bin", "chainin", "./data/../in.bin"} {
		got, err := externalTensor(loc).Data(dir)
		if err != nil || !bytes.Equal(got, onnxwiretest.Weights[:16]) {
			t.Errorf("location %q: %v %v, want the weights", loc, got, err)
		}
	}
	// the model directory itself may be reached through a symlink
	via := filepath.Join(t.TempDir(), "via")
	if err := os.Symlink(dir, via); err != nil {
		t.Fatal(err)
	}
	if got, err := externalTensor("in.bin").Data(via); err != nil || !bytes.Equal(got, onnxwiretest.Weights[:16]) {
		t.Errorf("symlinked model directory: %v %v", got, err)
	}

	sock := "sock"
	if _, err := os.Lstat(filepath.Join(dir, sock)); err != nil {
		sock = "" // no unix sockets here
	}
	cases := []struct {
		loc  string
		want error
	}{
		{"out.bin", ErrEscapesModelDir},
		{"outabs.bin", ErrEscapesModelDir},
		{"lnk/secret.bin", ErrEscapesModelDir},
		{"lnk/m/out.bin", ErrEscapesModelDir},
		{"c1", ErrEscapesModelDir},
		{"zero", ErrEscapesModelDir},
		{"../secret.bin", ErrEscapesModelDir},
		{"data/../../secret.bin", ErrEscapesModelDir},
		{filepath.Join(filepath.Dir(dir), "secret.bin"), ErrEscapesModelDir},
		{"/etc/passwd", ErrEscapesModelDir},
		{"fifo", ErrNotRegularFile},
		{"data", ErrNotRegularFile},
		{".", ErrNotRegularFile},
		{sock, ErrNotRegularFile},
		{"missing.bin", os.ErrNotExist},
	}
	for _, c := range cases {
		if c.loc == "" {
			continue
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			tp := externalTensor(c.loc)
			got, err := tp.Data(dir)
			if err == nil {
				t.Errorf("location %q: read %q, want an error", c.loc, got)
				return
			}
			if !errors.Is(err, c.want) {
				t.Errorf("location %q: %v, want %v", c.loc, err, c.want)
			}
			if r, _, closeFn, err := tp.Open(dir); err == nil {
				closeFn()
				t.Errorf("location %q: Open succeeded (%v)", c.loc, r)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("location %q: reading hangs", c.loc)
		}
	}
}
