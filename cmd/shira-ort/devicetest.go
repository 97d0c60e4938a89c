package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// A device-test bundle is a directory a phone can run on its own:
//
//	devicetest.json   the bundleSpec below
//	model/            an export.Expose directory
//	adapters/*.shira  the adapters
//	inputs/NAME.npy   one file per model input
//	ref/CONFIG/OUT.npy  reference outputs computed on the host (CPU provider)
const bundleSpecFile = "devicetest.json"

// bundleSpec describes a device-test bundle; paths are relative to it.
type bundleSpec struct {
	Format  string            `json:"format"`
	Model   string            `json:"model"`
	Inputs  map[string]string `json:"inputs"`
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

const bundleFormat = "shira-ort/devicetest/v1"

// newDeviceTestCmd is `shira-ort devicetest`: make a bundle on the host, or
// run it on a device (load with the chosen execution providers, switch
// adapters, check outputs against the references, print timings).
func newDeviceTestCmd() *cobra.Command {
	var (
		bundle, makeDir, model, mode string
		adapters, inputs             []string
		runs, threads                int
		atol, rtol                   float64
		provs                        providerFlags
	)
	cmd := &cobra.Command{
		Use:   "devicetest --bundle DIR [--provider P]... [--provider-fallback] | --make DIR --model EXPORTED --adapter A.shira[:ALPHA]...",
		Short: "On-device check: load a bundle with an execution provider, switch adapters, compare with shipped references, time it",
		Long: `devicetest checks adapter switching on a device (see docs/providers.md).

On the host, --make DIR writes a self-contained bundle: the exported model, the adapters
(each --adapter is one configuration; join several with '+' to fuse them), the inputs
(--input NAME=FILE.npy, or deterministic random ones) and reference outputs computed
with the CPU provider in live mode.

On the device, --bundle DIR opens the model with the --provider list and --mode, then
for the base model, each configuration and the base again (revert): switches, runs
--runs times, compares the outputs with the references (|got-ref| <= atol + rtol*|ref|;
exact for non-float outputs), checks that revert reproduces the base outputs of this
device bit for bit, and prints the switch and Run timings. It exits non-zero on any
mismatch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			switch {
			case makeDir != "" && bundle == "":
				if model == "" || len(adapters) == 0 {
					return errors.New("--make needs --model EXPORTED and at least one --adapter")
				}
				return makeBundle(cmd.Context(), w, makeDir, model, adapters, inputs, threads)
			case bundle != "" && makeDir == "":
				m, err := ort.ParseMode(mode)
				if err != nil {
					return fmt.Errorf("--mode: %w", err)
				}
				opts := &ort.Options{Mode: m, IntraOpThreads: threads}
				if err := provs.apply(opts); err != nil {
					return err
				}
				return runBundle(cmd.Context(), w, bundle, opts, max(runs, 1), atol, rtol)
			}
			return errors.New("give either --bundle DIR (run on the device) or --make DIR (write a bundle on the host)")
		},
	}
	f := cmd.Flags()
	f.StringVar(&bundle, "bundle", "", "bundle directory to run")
	f.StringVar(&makeDir, "make", "", "write a bundle into this directory (host side)")
	f.StringVar(&model, "model", "", "exported model directory (with --make)")
	f.StringArrayVar(&adapters, "adapter", nil, "adapter configuration A.shira[:ALPHA][+B.shira[:ALPHA]...] (with --make; repeatable)")
	f.StringArrayVar(&inputs, "input", nil, "model input NAME=FILE.npy (with --make; default: deterministic random values, dynamic dimensions 1)")
	f.StringVar(&mode, "mode", "live", "session mode: live, baked or hybrid")
	f.IntVar(&runs, "runs", 20, "Runs per configuration (the median is printed)")
	f.IntVar(&threads, "threads", 0, "intra-op threads (0: ONNX Runtime's default)")
	f.Float64Var(&atol, "atol", 1e-4, "absolute tolerance against the references")
	f.Float64Var(&rtol, "rtol", 1e-3, "relative tolerance against the references (raise it for fp16 providers, e.g. nnapi:fp16=1)")
	provs.register(f)
	return cmd
}

// makeBundle writes a bundle into dir (host side).
func makeBundle(ctx context.Context, w io.Writer, dir, model string, adapterSpecs, inputSpecs []string, threads int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	spec := bundleSpec{Format: bundleFormat, Model: "model", Inputs: map[string]string{},
		Host: fmt.Sprintf("%s/%s, ONNX Runtime %s, CPU provider, live mode", runtime.GOOS, runtime.GOARCH, ort.Version())}
	if err := copyDir(model, filepath.Join(dir, spec.Model)); err != nil {
		return err
	}
	sess, err := ort.Open(ctx, filepath.Join(dir, spec.Model), &ort.Options{Mode: ort.ModeLive, IntraOpThreads: threads})
	if err != nil {
		return err
	}
	defer sess.Close()

	// Inputs.
	feeds := map[string]*tensor.Tensor{}
	given := map[string]string{}
	for _, in := range inputSpecs {
		name, file, ok := strings.Cut(in, "=")
		if !ok || name == "" || file == "" {
			return fmt.Errorf("--input %q: want NAME=FILE.npy", in)
		}
		given[name] = file
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if err := os.MkdirAll(filepath.Join(dir, "inputs"), 0o755); err != nil {
		return err
	}
	for _, in := range sess.Inputs() {
		var t *tensor.Tensor
		if f, ok := given[in.Name]; ok {
			if t, err = npyfile.ReadFile(f); err != nil {
				return fmt.Errorf("--input %s: %w", in.Name, err)
			}
		} else if t, err = randomInput(in, rng); err != nil {
			return err
		}
		rel := filepath.Join("inputs", safeFileName(in.Name)+".npy")
		if err := npyfile.WriteFile(filepath.Join(dir, rel), t); err != nil {
			return err
		}
		spec.Inputs[in.Name] = rel
		feeds[in.Name] = t
	}

	// Adapters and references.
	if err := os.MkdirAll(filepath.Join(dir, "adapters"), 0o755); err != nil {
		return err
	}
	copied := map[string]string{}
	configs := append([]string{""}, adapterSpecs...)
	for i, c := range configs {
		bc := bundleConfig{Name: "base", Refs: map[string]string{}}
		if c != "" {
			bc.Name = fmt.Sprintf("config%d", i)
			for _, part := range strings.Split(c, "+") {
				as, err := parseAdapterSpec(part)
				if err != nil {
					return err
				}
				rel, ok := copied[as.Path]
				if !ok {
					rel = filepath.Join("adapters", fmt.Sprintf("%d-%s", len(copied), filepath.Base(as.Path)))
					if err := copyFile(as.Path, filepath.Join(dir, rel)); err != nil {
						return err
					}
					copied[as.Path] = rel
				}
				if !math.IsNaN(float64(as.Alpha)) {
					rel += fmt.Sprintf(":%g", as.Alpha)
				}
				bc.Adapters = append(bc.Adapters, rel)
			}
		}
		outs, err := switchAndRun(ctx, sess, dir, bc.Adapters, feeds)
		if err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		refDir := filepath.Join("ref", bc.Name)
		if err := os.MkdirAll(filepath.Join(dir, refDir), 0o755); err != nil {
			return err
		}
		for name, t := range outs {
			rel := filepath.Join(refDir, safeFileName(name)+".npy")
			if err := npyfile.WriteFile(filepath.Join(dir, rel), t); err != nil {
				return err
			}
			bc.Refs[name] = rel
		}
		spec.Configs = append(spec.Configs, bc)
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, bundleSpecFile), append(data, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote bundle %s: %d configurations (base + %d), %d inputs, references from %s\n",
		dir, len(spec.Configs), len(spec.Configs)-1, len(spec.Inputs), spec.Host)
	return nil
}

// switchAndRun switches sess to the configuration (adapter specs relative
// to dir; none = revert) and runs it once.
func switchAndRun(ctx context.Context, sess *ort.Session, dir string, specs []string, feeds map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	cfgs, closeAdapters, err := bundleAdapters(dir, specs)
	if err != nil {
		return nil, err
	}
	defer closeAdapters()
	if len(cfgs) == 0 {
		err = sess.Revert(ctx)
	} else {
		err = sess.Set(ctx, cfgs...)
	}
	if err != nil {
		return nil, err
	}
	return sess.Run(ctx, feeds)
}

// bundleAdapters opens adapter specs relative to dir.
func bundleAdapters(dir string, specs []string) ([]patch.Config, func(), error) {
	abs := make([]string, len(specs))
	for i, s := range specs {
		abs[i] = filepath.Join(dir, s)
	}
	return openAdapters(abs, nil)
}

// randomInput makes deterministic values for a float or integer input
// (dynamic dimensions 1).
func randomInput(in ort.IOInfo, rng *rand.Rand) (*tensor.Tensor, error) {
	shape := make([]int64, len(in.Shape))
	for i, d := range in.Shape {
		shape[i] = max(d, 1)
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return nil, err
	}
	switch in.DType {
	case tensor.Float32:
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return tensor.FromFloat32(shape, v)
	case tensor.Float16:
		v := make([]uint16, n)
		for i := range v {
			v[i] = tensor.Float32ToFloat16(float32(rng.NormFloat64()))
		}
		return tensor.New(tensor.Float16, shape, tensor.Bytes(v))
	case tensor.Int64:
		return tensor.Zeros(tensor.Int64, shape)
	}
	return nil, fmt.Errorf("input %s: no generator for %v; pass --input %s=FILE.npy", in.Name, in.DType, in.Name)
}

// configResult is one row of the device-test report.
type configResult struct {
	name          string
	switchTime    time.Duration
	runMedian     time.Duration
	maxAbs        float64
	maxRel        float64
	ok            bool
	detail        string
	outs          map[string]*tensor.Tensor
	revertOfFirst bool
}

// runBundle runs a bundle (device side).
func runBundle(ctx context.Context, w io.Writer, dir string, opts *ort.Options, runs int, atol, rtol float64) error {
	raw, err := os.ReadFile(filepath.Join(dir, bundleSpecFile))
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	var spec bundleSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("bundle %s: %w", bundleSpecFile, err)
	}
	if spec.Format != bundleFormat || len(spec.Configs) == 0 {
		return fmt.Errorf("bundle %s: format %q with %d configurations, want %s", dir, spec.Format, len(spec.Configs), bundleFormat)
	}
	if err := ort.Init(); err != nil {
		return err
	}
	feeds := map[string]*tensor.Tensor{}
	for name, rel := range spec.Inputs {
		t, err := npyfile.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return fmt.Errorf("input %s: %w", name, err)
		}
		feeds[name] = t
	}
	avail, _ := ort.AvailableProviders()
	fmt.Fprintf(w, "device %s/%s, %d CPUs, ONNX Runtime %s (providers in this build: %s)\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), ort.Version(), strings.Join(avail, ", "))
	fmt.Fprintf(w, "references: %s\n", spec.Host)

	start := time.Now()
	sess, err := ort.Open(ctx, filepath.Join(dir, spec.Model), opts)
	if err != nil {
		return err
	}
	defer sess.Close()
	fmt.Fprintf(w, "opened %s in %v, mode %v\n", spec.Model, time.Since(start).Round(time.Millisecond), sess.Mode())
	for _, st := range sess.Providers() {
		fmt.Fprintf(w, "  provider %s\n", providerStatusText(st))
	}

	// base, each configuration, base again (revert).
	order := append(append([]bundleConfig(nil), spec.Configs...), spec.Configs[0])
	var results []configResult
	for i, bc := range order {
		r := configResult{name: bc.Name, revertOfFirst: i == len(order)-1 && i > 0}
		if r.revertOfFirst {
			r.name = bc.Name + " (revert)"
		}
		cfgs, closeAdapters, err := bundleAdapters(dir, bc.Adapters)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if len(cfgs) == 0 {
			err = sess.Revert(ctx)
		} else {
			err = sess.Set(ctx, cfgs...)
		}
		r.switchTime = time.Since(t0)
		if err != nil {
			closeAdapters()
			return fmt.Errorf("%s: switch: %w", bc.Name, err)
		}
		times := make([]time.Duration, runs)
		for k := range times {
			t0 := time.Now()
			outs, err := sess.Run(ctx, feeds)
			times[k] = time.Since(t0)
			if err != nil {
				closeAdapters()
				return fmt.Errorf("%s: Run: %w", bc.Name, err)
			}
			if k == 0 {
				r.outs = outs
			}
		}
		closeAdapters()
		sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
		r.runMedian = times[len(times)/2]
		r.ok, r.maxAbs, r.maxRel, r.detail = compareRefs(dir, bc.Refs, r.outs, atol, rtol)
		if r.revertOfFirst && r.ok {
			for name, t := range results[0].outs {
				if !bytes.Equal(t.Data, r.outs[name].Data) {
					r.ok, r.detail = false, "revert: output "+name+" differs from this device's base output"
				}
			}
		}
		results = append(results, r)
	}

	fmt.Fprintf(w, "\n%-22s %12s %12s %12s %12s  %s\n", "configuration", "switch", "Run median", "max |diff|", "max rel", "result")
	failed := 0
	for _, r := range results {
		res := "ok"
		if !r.ok {
			res, failed = "FAIL: "+r.detail, failed+1
		}
		fmt.Fprintf(w, "%-22s %12v %12v %12.3g %12.3g  %s\n", r.name, r.switchTime.Round(time.Microsecond),
			r.runMedian.Round(time.Microsecond), r.maxAbs, r.maxRel, res)
	}
	if failed > 0 {
		return fmt.Errorf("devicetest: %d of %d checks failed (atol %g, rtol %g)", failed, len(results), atol, rtol)
	}
	fmt.Fprintf(w, "PASS: %d configurations match the references (atol %g, rtol %g); revert is bit-exact\n", len(results), atol, rtol)
	return nil
}

// compareRefs compares outputs with the reference .npy files.
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
			if math.IsNaN(d) {
				return false, maxAbs, maxRel, fmt.Sprintf("output %s[%d] = %v, reference %v", name, i, g[i], r[i])
			}
			maxAbs = math.Max(maxAbs, d)
			maxRel = math.Max(maxRel, d/math.Max(math.Abs(float64(r[i])), 1e-12))
			if d > atol+rtol*math.Abs(float64(r[i])) {
				detail = fmt.Sprintf("output %s[%d] = %v, reference %v", name, i, g[i], r[i])
				ok = false
				return ok, maxAbs, maxRel, detail
			}
		}
	}
	return true, maxAbs, maxRel, ""
}

// copyDir copies the regular files of src into dst (not recursive: an
// export directory is flat).
func copyDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := atomicfile.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Discard()
		return err
	}
	return out.Commit()
}
