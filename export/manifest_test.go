package export

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestTensorEntrySum(t *testing.T) {
	want := sha256.Sum256([]byte("w"))
	for _, c := range []struct {
		hex string
		ok  bool
	}{{hex.EncodeToString(want[:]), true}, {"", false}, {"abc", false}, {strings.Repeat("zz", 32), false}} {
		e := TensorEntry{Name: "w", SHA256: c.hex}
		got, ok := e.Sum()
		if ok != c.ok || (ok && got != want) || (!ok && got != [32]byte{}) {
			t.Errorf("Sum(%q) = %x, %v; want ok %v", c.hex, got, ok, c.ok)
		}
	}
}
