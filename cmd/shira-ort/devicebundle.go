package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/tensor"
)

// A device-test bundle is a directory a phone can run on its own
// (`devicetest make` writes it, `devicetest run` runs it):
//
//	devicetest.json     the bundleSpec below
//	model/              an export.Expose directory
//	adapters/*.shira    the adapters
//	inputs/NAME.npy     one file per model input
//	ref/CONFIG/OUT.npy  reference outputs computed on the host (CPU provider)
const bundleSpecFile = "devicetest.json"

// bundleFormat is the Format of the bundles this version writes and reads.
const bundleFormat = "shira-ort/devicetest/v1"

// bundleSpec describes a device-test bundle; paths are relative to it.
type bundleSpec struct {
	Format  string            `json:"format"`
	Model   string            `json:"model"`
	Inputs  map[string]string `json:"inputs"` // input name -> .npy
	Configs []bundleConfig    `json:"configs"`
	// Host is where the references were computed.
	Host string `json:"host"`
}

// bundleConfig is one adapter configuration and its reference outputs.
type bundleConfig struct {
	Name     string            `json:"name"`
	Adapters []string          `json:"adapters"` // FILE[:ALPHA], none for the base model
	Refs     map[string]string `json:"refs"`     // output name -> .npy
}

// readBundleSpec reads and checks dir's devicetest.json.
func readBundleSpec(dir string) (*bundleSpec, error) {
	raw, err := os.ReadFile(filepath.Join(dir, bundleSpecFile))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	var spec bundleSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", bundleSpecFile, err)
	}
	if spec.Format != bundleFormat || len(spec.Configs) == 0 {
		return nil, fmt.Errorf("bundle %s: format %q with %d configurations, want %s", dir, spec.Format, len(spec.Configs), bundleFormat)
	}
	return &spec, nil
}

// write writes the spec into dir, atomically.
func (s *bundleSpec) write(dir string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(dir, bundleSpecFile), append(data, '\n'))
}

// readInputs reads the bundle's input tensors.
func (s *bundleSpec) readInputs(dir string) (map[string]*tensor.Tensor, error) {
	feeds := map[string]*tensor.Tensor{}
	for name, rel := range s.Inputs {
		t, err := npyfile.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("bundle: input %s: %w", name, err)
		}
		feeds[name] = t
	}
	return feeds, nil
}

// writeTensors writes each tensor to root/sub/NAME.npy (NAME escaped by
// safeFileName, so distinct names never share a file) and returns each
// name's path relative to root.
func writeTensors(root, sub string, ts map[string]*tensor.Tensor) (map[string]string, error) {
	if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
		return nil, err
	}
	rels := map[string]string{}
	for name, t := range ts {
		rel := filepath.Join(sub, safeFileName(name)+".npy")
		if err := npyfile.WriteFile(filepath.Join(root, rel), t); err != nil {
			return nil, err
		}
		rels[name] = rel
	}
	return rels, nil
}

// compareRefs compares outputs with the reference .npy files (paths
// relative to dir): |got-ref| <= atol + rtol*|ref| for float outputs, equal
// bytes for the others. detail says what failed.
func compareRefs(dir string, refs map[string]string, outs map[string]*tensor.Tensor, atol, rtol float64) (ok bool, maxAbs, maxRel float64, detail string) {
	names := make([]string, 0, len(refs))
	for n := range refs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ref, err := npyfile.ReadFile(filepath.Join(dir, refs[name]))
		if err != nil {
			return false, maxAbs, maxRel, err.Error()
		}
		got, present := outs[name]
		if !present {
			return false, maxAbs, maxRel, "missing output " + name
		}
		if got.DType != ref.DType || fmt.Sprint(got.Shape) != fmt.Sprint(ref.Shape) {
			return false, maxAbs, maxRel, fmt.Sprintf("output %s is %v %v, reference %v %v", name, got.DType, got.Shape, ref.DType, ref.Shape)
		}
		if !ref.DType.IsFloat() {
			if !bytes.Equal(got.Data, ref.Data) {
				return false, maxAbs, maxRel, "output " + name + " differs (exact comparison)"
			}
			continue
		}
		g, err1 := got.AsFloat32()
		r, err2 := ref.AsFloat32()
		if err := errors.Join(err1, err2); err != nil {
			return false, maxAbs, maxRel, err.Error()
		}
		for i := range r {
			d := math.Abs(float64(g[i]) - float64(r[i]))
			if !math.IsNaN(d) {
				maxAbs = math.Max(maxAbs, d)
				maxRel = math.Max(maxRel, d/math.Max(math.Abs(float64(r[i])), 1e-12))
			}
			if math.IsNaN(d) || d > atol+rtol*math.Abs(float64(r[i])) {
				return false, maxAbs, maxRel, fmt.Sprintf("output %s[%d] = %v, reference %v", name, i, g[i], r[i])
			}
		}
	}
	return true, maxAbs, maxRel, ""
}
