//go:build unix

package onnxwire

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/tensor"
)

// secret is what a file outside the model directory holds: no read of
// external data may ever return it.
var secret = bytes.Repeat([]byte("SECRET!!"), 8) // 64 bytes: a float32 [4, 4]

// hostileDir builds, under a fresh temporary directory,
//
//	secret.bin                 outside the model directory
//	m/data/w.bin               the real weights (float32 1, 2, ..., 16)
//	m/in.bin -> data/w.bin     symlink inside the directory
//	m/inabs.bin -> /ABS/m/data/w.bin   absolute symlink inside
//	m/chainin -> in.bin        chain that stays inside
//	m/out.bin -> ../secret.bin file symlink out
//	m/outabs.bin -> /ABS/secret.bin
//	m/lnk -> ..                directory symlink out
//	m/c1 -> c2, m/c2 -> out.bin   chain that ends outside
//	m/zero -> /dev/zero
//	m/fifo                     a FIFO
//	m/sock                     a unix socket (when one can be bound)
//
// and returns the model directory m.
func hostileDir(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	m := filepath.Join(root, "m")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(m, "data"), 0o755))
	must(os.WriteFile(filepath.Join(root, "secret.bin"), secret, 0o644))
	must(os.WriteFile(filepath.Join(m, "data", "w.bin"), f32bytes(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16), 0o644))
	for link, target := range map[string]string{
		"in.bin":     "data/w.bin",
		"inabs.bin":  filepath.Join(m, "data", "w.bin"),
		"chainin":    "in.bin",
		"out.bin":    "../secret.bin",
		"outabs.bin": filepath.Join(root, "secret.bin"),
		"lnk":        "..",
		"c1":         "c2",
		"c2":         "out.bin",
		"zero":       "/dev/zero",
	} {
		must(os.Symlink(target, filepath.Join(m, link)))
	}
	must(syscall.Mkfifo(filepath.Join(m, "fifo"), 0o644))
	if l, err := net.Listen("unix", filepath.Join(m, "sock")); err == nil {
		t.Cleanup(func() { l.Close() })
	}
	return m
}

func externalTensor(loc string) *Tensor {
	return TensorSpec{Name: "W", DType: tensor.Float32, Dims: []int64{2, 2},
		External: &ExternalData{Location: loc, Length: -1}}.Tensor()
}

// TestExternalDataConfined: external data is read only from regular files
// inside the model directory after every symbolic link is followed (as
// ONNX Runtime does); symlinks that stay inside are followed.
func TestExternalDataConfined(t *testing.T) {
	dir := hostileDir(t)
	for _, loc := range []string{"data/w.bin", "in.bin", "inabs.bin", "chainin", "./data/../in.bin"} {
		got, err := externalTensor(loc).Data(dir)
		if err != nil || !bytes.Equal(got, f32bytes(1, 2, 3, 4)) {
			t.Errorf("location %q: %v %v, want the weights", loc, got, err)
		}
	}
	// the model directory itself may be reached through a symlink
	via := filepath.Join(t.TempDir(), "via")
	if err := os.Symlink(dir, via); err != nil {
		t.Fatal(err)
	}
	if got, err := externalTensor("in.bin").Data(via); err != nil || !bytes.Equal(got, f32bytes(1, 2, 3, 4)) {
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
