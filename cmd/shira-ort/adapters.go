package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/patch"
)

// adapterSpec is one --adapter FILE[:ALPHA] flag.
type adapterSpec struct {
	Path  string
	Alpha float32 // NaN: the adapter's default alpha
}

// parseAdapterSpec parses FILE[:ALPHA]. A suffix after the last ':' that
// is not a number is part of the path. One that is a number but not a
// finite float32 (1e39, inf, NaN) is an error about the alpha — unless the
// whole of s names an existing file, whose name then really ends so.
func parseAdapterSpec(s string) (adapterSpec, error) {
	spec := adapterSpec{Path: s, Alpha: float32(math.NaN())}
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		suffix := s[i+1:]
		a, err := strconv.ParseFloat(suffix, 32)
		switch {
		case err == nil && !math.IsNaN(a) && !math.IsInf(a, 0):
			spec.Path, spec.Alpha = s[:i], float32(a)
		case errors.Is(err, strconv.ErrSyntax): // not a number: part of the path
		default: // out of range, NaN or infinite
			if _, serr := os.Stat(s); serr != nil {
				return spec, fmt.Errorf("--adapter %q: alpha %s is not a finite float32", s, suffix)
			}
		}
	}
	if spec.Path == "" {
		return spec, fmt.Errorf("--adapter %q: empty path", s)
	}
	return spec, nil
}

// openAdapters opens every --adapter flag and returns the patch
// configuration plus a function closing the files. resolve, when not
// nil, maps flag i's path to the .shira file to open (generate: a style
// name or a PEFT directory).
func openAdapters(flags []string, resolve func(i int, path string) (string, error)) ([]patch.Config, func(), error) {
	var cfgs []patch.Config
	var opened []*adapter.Adapter
	closeAll := func() {
		for _, a := range opened {
			a.Close()
		}
	}
	for i, f := range flags {
		spec, err := parseAdapterSpec(f)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		path := spec.Path
		if resolve != nil {
			if path, err = resolve(i, path); err != nil {
				closeAll()
				return nil, nil, err
			}
		}
		a, err := adapter.Open(path)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("--adapter %q: %w", f, err)
		}
		opened = append(opened, a)
		alpha := spec.Alpha
		if math.IsNaN(float64(alpha)) {
			alpha = a.DefaultAlpha
		}
		cfgs = append(cfgs, patch.Config{Adapter: a, Alpha: alpha})
	}
	return cfgs, closeAll, nil
}
