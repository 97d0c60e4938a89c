package switchbench

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
)

// IndexRow compares index encodings of the .shira format on adapters
// over the whole model; times are medians in milliseconds.
type IndexRow struct {
	Encoding string  `json:"encoding"`
	DType    string  `json:"dtype"`
	Threads  int     `json:"threads"`
	NNZ      int     `json:"nnz"`
	FileMB   float64 `json:"file_mb"`
	// IndexBytesPerEntry is (file size - value bytes) / NNZ.
	IndexBytesPerEntry float64 `json:"index_bytes_per_entry"`
	// OpenWarmMs is adapter.Open (mmap, verify, decode) with the file in
	// the page cache; OpenSetColdMs is Open + Set after dropping the file
	// from the page cache (posix_fadvise DONTNEED).
	OpenWarmMs    float64 `json:"open_warm_ms"`
	OpenSetColdMs float64 `json:"open_set_cold_ms"`
	// SetMs is Set on the base weights, SwitchMs Set(B) with A active.
	SetMs    float64 `json:"set_ms"`
	SwitchMs float64 `json:"switch_ms"`
}

// RunIndex writes the same two adapters over the model's weights in every
// index encoding and measures file size, open (decode) time and patch
// time, side by side. ort.Init is not needed.
func RunIndex(cfg ModelConfig) ([]IndexRow, error) {
	logf := logger(cfg.Log)
	work, cleanup, err := workDir(cfg.Work)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	_, entries, f32, err := modelWeights(cfg.Dir, cfg.Layers)
	if err != nil {
		return nil, err
	}
	encs := []adapter.IndexEncoding{adapter.FlatU32, adapter.GapU16}
	th := cfg.Threads[len(cfg.Threads)-1]
	var rows []IndexRow
	for _, dt := range cfg.DTypes {
		ws := make([]patch.Weight, len(entries))
		for i, e := range entries {
			ws[i] = patch.Weight{Name: e.Name, DType: dt, Shape: e.Shape, Data: toDType(f32[i], dt)}
		}
		var paths [2][2]string // [encoding][adapter]
		var valueBytes, nnz int
		for k := range 2 {
			a, err := randomShira(fmt.Sprint("AB"[k:k+1]), ws, cfg.Density, dt, rand.New(rand.NewPCG(cfg.Seed, uint64(10+k))))
			if err != nil {
				return nil, err
			}
			if k == 0 {
				nnz = a.NNZ()
				valueBytes = nnz * dt.Size()
			}
			for e, enc := range encs {
				p := filepath.Join(work, fmt.Sprintf("index-%v-%v-%d.shira", enc, dt, k))
				if err := adapter.WriteWith(p, a, adapter.EncodeOptions{Index: enc}); err != nil {
					return nil, fmt.Errorf("switchbench: %w", err)
				}
				paths[e][k] = p
			}
		}
		p, err := patch.New(ws, patch.WithWorkers(th))
		if err != nil {
			return nil, fmt.Errorf("switchbench: %w", err)
		}
		var open, cold, set, sw [2]samples
		for round := range cfg.Rounds + 1 {
			for e := range encs {
				var a, b *adapter.Adapter
				steps := []struct {
					s *samples
					f func() error
				}{
					{&open[e], func() (err error) { a, err = adapter.Open(paths[e][0]); return err }},
					{&set[e], func() error { return p.Set(patch.Config{Adapter: a, Alpha: 1}) }},
					{&cold[e], func() (err error) {
						if b, err = adapter.Open(paths[e][1]); err != nil {
							return err
						}
						return p.Set(patch.Config{Adapter: b, Alpha: 1})
					}},
					{&sw[e], func() error { return p.Set(patch.Config{Adapter: a, Alpha: 1}) }},
				}
				if err := dropCache(paths[e][1]); err != nil {
					return nil, err
				}
				for _, st := range steps {
					if err := st.s.time(st.f); err != nil {
						return nil, fmt.Errorf("switchbench: index %v: %w", encs[e], err)
					}
				}
				p.Revert()
				a.Close()
				b.Close()
			}
			if round == 0 {
				open, cold, set, sw = [2]samples{}, [2]samples{}, [2]samples{}, [2]samples{}
			}
		}
		for e, enc := range encs {
			mb := fileMB(paths[e][0])
			rows = append(rows, IndexRow{Encoding: enc.String(), DType: dt.String(), Threads: th, NNZ: nnz, FileMB: mb,
				IndexBytesPerEntry: (mb*1e6 - float64(valueBytes)) / float64(nnz),
				OpenWarmMs:         open[e].median(), OpenSetColdMs: cold[e].median(), SetMs: set[e].median(), SwitchMs: sw[e].median()})
			logf("index %v %v: %.1f MB, open %.1f ms, cold open+set %.1f ms, set %.1f ms, switch %.1f ms", enc, dt, mb,
				open[e].median(), cold[e].median(), set[e].median(), sw[e].median())
		}
	}
	return rows, nil
}
