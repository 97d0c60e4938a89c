//go:build unix

// Package onnxwiretest holds what the tests of onnxwire and export share:
// a model directory full of the links and special files an untrusted
// model's external data may name.
package onnxwiretest

import (
	"bytes"
	"encoding/binary"
	"math"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Secret is what the file beside the directory of UntrustedDir holds: no
// read of external data may ever return it (nor any 8 bytes of it, its
// pattern). It is a float32 [4, 4].
var Secret = bytes.Repeat([]byte("SECRET!!"), 8)

// Weights is what w.bin and data/w.bin of UntrustedDir hold: float32 1,
// 2, ..., 16 (a [4, 4]).
var Weights = func() []byte {
	var b []byte
	for i := range 16 {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i+1)))
	}
	return b
}()

// UntrustedDir makes, under a fresh temporary directory ROOT,
//
//	ROOT/secret.bin              Secret, outside the model directory
//	ROOT/m/w.bin, m/data/w.bin   Weights
//	m/in.bin -> data/w.bin       a link that stays inside
//	m/inabs.bin -> ROOT/m/data/w.bin   an absolute link inside
//	m/chainin -> in.bin          a chain that stays inside
//	m/out.bin -> ../secret.bin   a file link out
//	m/outabs.bin -> ROOT/secret.bin
//	m/lnk -> ..                  a directory link out
//	m/c1 -> c2 -> out.bin        a chain that ends outside
//	m/zero -> /dev/zero          a device, outside
//	m/fifo                       a FIFO nobody writes to
//	m/sock                       a listening unix socket (when one can be bound)
//
// and returns the model directory ROOT/m.
func UntrustedDir(tb testing.TB) string {
	tb.Helper()
	root := tb.TempDir()
	m := filepath.Join(root, "m")
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(m, "data"), 0o755))
	must(os.WriteFile(filepath.Join(root, "secret.bin"), Secret, 0o644))
	must(os.WriteFile(filepath.Join(m, "w.bin"), Weights, 0o644))
	must(os.WriteFile(filepath.Join(m, "data", "w.bin"), Weights, 0o644))
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
		tb.Cleanup(func() { l.Close() })
	}
	return m
}
