package adapter

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFuzzSeeds regenerates the committed seed corpus when
// SHIRA_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SHIRA_WRITE_SEEDS") != "1" {
		t.Skip("set SHIRA_WRITE_SEEDS=1 to regenerate testdata/fuzz/FuzzDecode")
	}
	b, err := EncodeWith(sample(t), EncodeOptions{Index: FlatU32})
	if err != nil {
		t.Fatal(err)
	}
	gap, err := EncodeWith(sample(t), EncodeOptions{Index: GapU16})
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := Encode(&Adapter{DefaultAlpha: 1})
	seeds := map[string][]byte{
		"sample":          b,
		"empty":           empty,
		"raw_v1":          buildRaw(1, 0, nil, 1),
		"bad_version":     buildRaw(2, 0, nil, 1),
		"truncated":       b[:len(b)/2],
		"sample_gap16":    gap,
		"truncated_gap16": gap[:len(gap)/2],
	}
	for name, s := range gapSeeds(t) {
		seeds[name] = s
	}
	for name, s := range seeds {
		p := filepath.Join("testdata", "fuzz", "FuzzDecode", name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
