package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/atomicfile"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/tensor"
)

// newDeviceTestCmd is `shira-ort devicetest`: make a bundle on the host
// (devicetest make), run it on a device (devicetest run).
func newDeviceTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "devicetest make|run",
		Short: "On-device check: load a bundle with an execution provider, switch adapters, compare with shipped references, time it",
		Long: `devicetest checks adapter switching on a device (see docs/providers.md): "devicetest make"
writes a self-contained bundle on the host, "devicetest run" runs it on the device.`,
		Args: cobra.NoArgs, // an unknown command is an error, not the help
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDeviceTestMakeCmd(), newDeviceTestRunCmd())
	return cmd
}

// newDeviceTestMakeCmd is `shira-ort devicetest make` (host side).
func newDeviceTestMakeCmd() *cobra.Command {
	var (
		model, out       string
		adapters, inputs []string
		threads          int
	)
	cmd := &cobra.Command{
		Use:   "make --model EXPORTED_DIR --adapter A.shira[:ALPHA][+B.shira[:ALPHA]]... [--input NAME=FILE.npy]... -o BUNDLE",
		Short: "Write a device-test bundle: the model, adapters, inputs and reference outputs computed here on CPU",
		Long: `devicetest make writes a self-contained bundle into BUNDLE: the exported model, the adapters
(each --adapter is one configuration; join several with '+' to fuse them), the inputs
(--input NAME=FILE.npy, or deterministic random ones) and the reference outputs of the base
model and of each configuration, computed with the CPU provider in live mode.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			given, err := readInputFlags(inputs)
			if err != nil {
				return err
			}
			return makeBundle(cmd.Context(), cmd.OutOrStdout(), out, model, adapters, given, threads)
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "exported model directory")
	f.StringArrayVar(&adapters, "adapter", nil, "adapter configuration A.shira[:ALPHA][+B.shira[:ALPHA]...] (repeatable: one configuration each)")
	f.StringArrayVar(&inputs, "input", nil, "model input NAME=FILE.npy (default: deterministic random values, dynamic dimensions 1)")
	f.IntVar(&threads, "threads", 0, "intra-op threads (0: ONNX Runtime's default)")
	f.StringVarP(&out, "output", "o", "", "bundle directory to write")
	markRequired(cmd, "model", "adapter", "output")
	return cmd
}

// newDeviceTestRunCmd is `shira-ort devicetest run` (device side).
func newDeviceTestRunCmd() *cobra.Command {
	var (
		mode       string
		runs       int
		threads    int
		atol, rtol float64
		provs      providerFlags
	)
	cmd := &cobra.Command{
		Use:   "run BUNDLE [--provider P]... [--provider-fallback] [--mode live|baked|hybrid|packed] [--runs N]",
		Short: "Run a device-test bundle: switch its adapters with the chosen execution providers, compare with its references, time it",
		Long: `devicetest run opens the bundle's model with the --provider list and --mode, then for
the base model, each configuration and the base again (revert): switches, runs --runs times,
compares the outputs with the references (|got-ref| <= atol + rtol*|ref|; exact for
non-float outputs), checks that revert reproduces the base outputs of this device bit for
bit, and prints the switch and Run timings. It exits non-zero on any mismatch.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := ort.ParseMode(mode)
			if err != nil {
				return fmt.Errorf("--mode: %w", err)
			}
			opts := &ort.Options{Mode: m, IntraOpThreads: threads, CheckFinite: true}
			if err := provs.apply(opts); err != nil {
				return err
			}
			return runBundle(cmd.Context(), cmd.OutOrStdout(), args[0], opts, max(runs, 1), atol, rtol)
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "live", "session mode: live, baked, hybrid or packed (falls back to hybrid where it does not apply, e.g. weights an accelerator took)")
	f.IntVar(&runs, "runs", 20, "Runs per configuration (the median is printed)")
	f.IntVar(&threads, "threads", 0, "intra-op threads (0: ONNX Runtime's default)")
	f.Float64Var(&atol, "atol", 1e-4, "absolute tolerance against the references")
	f.Float64Var(&rtol, "rtol", 1e-3, "relative tolerance against the references (raise it for fp16 providers, e.g. nnapi:fp16=1)")
	provs.register(f)
	return cmd
}

// makeBundle writes a bundle into dir (host side): the model, the inputs
// (given ones, random ones for the rest), and per configuration (the base
// model first) its adapters and reference outputs.
func makeBundle(ctx context.Context, w io.Writer, dir, model string, configs []string, given map[string]*tensor.Tensor, threads int) error {
	spec := bundleSpec{Format: bundleFormat, Model: "model",
		Host: fmt.Sprintf("%s/%s, ONNX Runtime %s, CPU provider, live mode", runtime.GOOS, runtime.GOARCH, ort.Version())}
	if err := copyDir(model, filepath.Join(dir, spec.Model)); err != nil {
		return err
	}
	sess, err := ort.Open(ctx, filepath.Join(dir, spec.Model), &ort.Options{Mode: ort.ModeLive, IntraOpThreads: threads, CheckFinite: true})
	if err != nil {
		return err
	}
	defer sess.Close()
	feeds, err := bundleInputs(sess.Inputs(), given)
	if err != nil {
		return err
	}
	if spec.Inputs, err = writeTensors(dir, "inputs", feeds); err != nil {
		return err
	}
	copied := map[string]string{} // adapter path -> its copy in the bundle
	for i, c := range append([]string{""}, configs...) {
		bc := bundleConfig{Name: "base"}
		if c != "" {
			bc.Name = fmt.Sprintf("config%d", i)
			if bc.Adapters, err = copyAdapters(dir, c, copied); err != nil {
				return err
			}
		}
		if _, err := switchBundle(ctx, sess, dir, bc.Adapters); err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		outs, err := sess.Run(ctx, feeds)
		if err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		if bc.Refs, err = writeTensors(dir, filepath.Join("ref", bc.Name), outs); err != nil {
			return err
		}
		spec.Configs = append(spec.Configs, bc)
	}
	if err := spec.write(dir); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote bundle %s: %d configurations (base + %d), %d inputs, references from %s\n",
		dir, len(spec.Configs), len(spec.Configs)-1, len(spec.Inputs), spec.Host)
	return nil
}

// bundleInputs returns a tensor for every model input: the given one, or
// deterministic random values. A given input the model does not have is an
// error.
func bundleInputs(ins []ort.IOInfo, given map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error) {
	for name := range given {
		if !slices.ContainsFunc(ins, func(in ort.IOInfo) bool { return in.Name == name }) {
			return nil, fmt.Errorf("--input %s: the model has no such input; its inputs:%s", name, inputsText(ins))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	feeds := map[string]*tensor.Tensor{}
	for _, in := range ins {
		t, ok := given[in.Name]
		if !ok {
			var err error
			if t, err = randomInput(in, rng); err != nil {
				return nil, err
			}
		}
		feeds[in.Name] = t
	}
	return feeds, nil
}

// copyAdapters copies the adapters of one configuration,
// A.shira[:ALPHA][+B.shira[:ALPHA]...], into dir/adapters (each file once:
// copied maps the paths already copied to their copies) and returns the
// configuration's specs relative to dir.
func copyAdapters(dir, config string, copied map[string]string) ([]string, error) {
	var specs []string
	for _, part := range strings.Split(config, "+") {
		as, err := parseAdapterSpec(part)
		if err != nil {
			return nil, err
		}
		rel, ok := copied[as.Path]
		if !ok {
			rel = filepath.Join("adapters", fmt.Sprintf("%d-%s", len(copied), filepath.Base(as.Path)))
			if err := copyFile(as.Path, filepath.Join(dir, rel)); err != nil {
				return nil, err
			}
			copied[as.Path] = rel
		}
		if !math.IsNaN(float64(as.Alpha)) {
			rel += fmt.Sprintf(":%g", as.Alpha)
		}
		specs = append(specs, rel)
	}
	return specs, nil
}

// switchBundle switches sess to a configuration of the bundle in dir
// (adapter specs relative to dir; none: revert to the base model) and
// returns how long the switch took. The session holds the adapters it made
// active, so they are closed here.
func switchBundle(ctx context.Context, sess *ort.Session, dir string, specs []string) (time.Duration, error) {
	abs := make([]string, len(specs))
	for i, s := range specs {
		abs[i] = filepath.Join(dir, s)
	}
	cfgs, closeAdapters, err := openAdapters(abs, nil)
	if err != nil {
		return 0, err
	}
	defer closeAdapters()
	return timed(func() error {
		if len(cfgs) == 0 {
			return sess.Revert(ctx)
		}
		return sess.Set(ctx, cfgs...)
	})
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
	name       string
	switchTime time.Duration
	runMedian  time.Duration
	maxAbs     float64
	maxRel     float64
	ok         bool
	detail     string                    // what failed
	outs       map[string]*tensor.Tensor // the first Run's
}

// runBundle runs the bundle in dir (device side): the base model, each
// configuration, then the base again (revert), each checked against its
// references, the revert also against this device's first base outputs.
func runBundle(ctx context.Context, w io.Writer, dir string, opts *ort.Options, runs int, atol, rtol float64) error {
	spec, err := readBundleSpec(dir)
	if err != nil {
		return err
	}
	if err := ort.Init(); err != nil {
		return err
	}
	feeds, err := spec.readInputs(dir)
	if err != nil {
		return err
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
		fmt.Fprintf(w, "  provider %s\n", st)
	}

	order := append(slices.Clone(spec.Configs), spec.Configs[0])
	results := make([]configResult, len(order))
	for i, bc := range order {
		r := &results[i]
		if err := runConfig(ctx, sess, dir, bc, feeds, runs, r); err != nil {
			return err
		}
		r.ok, r.maxAbs, r.maxRel, r.detail = compareRefs(dir, bc.Refs, r.outs, atol, rtol)
		if i == len(order)-1 {
			r.name += " (revert)"
			if name := firstDifferent(results[0].outs, r.outs); r.ok && name != "" {
				r.ok, r.detail = false, "revert: output "+name+" differs from this device's base output"
			}
		}
	}
	return printResults(w, results, atol, rtol)
}

// runConfig switches sess to bc, runs it runs times and fills r with the
// switch time, the median Run time and the first Run's outputs.
func runConfig(ctx context.Context, sess *ort.Session, dir string, bc bundleConfig, feeds map[string]*tensor.Tensor, runs int, r *configResult) error {
	r.name = bc.Name
	var err error
	if r.switchTime, err = switchBundle(ctx, sess, dir, bc.Adapters); err != nil {
		return fmt.Errorf("%s: switch: %w", bc.Name, err)
	}
	times := make([]time.Duration, runs)
	for k := range times {
		start := time.Now()
		outs, err := sess.Run(ctx, feeds)
		times[k] = time.Since(start)
		if err != nil {
			return fmt.Errorf("%s: Run: %w", bc.Name, err)
		}
		if k == 0 {
			r.outs = outs
		}
	}
	slices.Sort(times)
	r.runMedian = times[len(times)/2]
	return nil
}

// firstDifferent returns the name of an output of want whose bytes differ
// in got, or "".
func firstDifferent(want, got map[string]*tensor.Tensor) string {
	for name, t := range want {
		if g, ok := got[name]; !ok || !bytes.Equal(t.Data, g.Data) {
			return name
		}
	}
	return ""
}

// printResults prints the report table and returns an error when a check
// failed.
func printResults(w io.Writer, results []configResult, atol, rtol float64) error {
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

// copyFile copies src to dst through atomicfile.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := atomicfile.Create(dst)
	if err != nil {
		return err
	}
	defer out.Discard()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Commit()
}
