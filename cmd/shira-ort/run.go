package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
	"github.com/shira-ort/shira-ort/tensor"
)

// newRunCmd is `shira-ort run`: a model with adapters patched into a live
// session, outputs as .npy files.
func newRunCmd() *cobra.Command {
	var (
		model, outDir, mode string
		adapters, inputs    []string
		threads             int
		force               bool
		minLanded           float64
		rounding            roundingFlag
		provs               providerFlags
	)
	cmd := &cobra.Command{
		Use:   "run --model DIR [--adapter A.shira[:ALPHA]]... --input NAME=FILE.npy... --output-dir OUT",
		Short: "Run an exported model with adapters patched into the session's weights; outputs as .npy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			feeds, err := readInputFlags(inputs)
			if err != nil {
				return err
			}
			cfgs, closeAdapters, err := openAdapters(adapters, nil)
			if err != nil {
				return err
			}
			defer closeAdapters()
			if err := ort.Init(); err != nil {
				return err
			}
			m, err := ort.ParseMode(mode)
			if err != nil {
				return fmt.Errorf("--mode: %w", err)
			}
			opts := &ort.Options{IntraOpThreads: threads, Mode: m, SkipFingerprintCheck: force, CheckFinite: true, Rounding: rounding.r}
			if err := provs.apply(opts); err != nil {
				return err
			}
			sess, err := openForRun(cmd.Context(), model, opts, len(cfgs) > 0)
			if err != nil {
				return err
			}
			defer sess.Close()
			w := cmd.OutOrStdout()
			printProviders(w, sess.Providers())
			if r := sess.FallbackReason(); r != "" {
				fmt.Fprintf(w, "session mode %v (packed does not apply: %s)\n", sess.Mode(), r)
			}
			for _, c := range sess.Caveats() {
				fmt.Fprintf(w, "note: %s\n", c)
			}
			if len(cfgs) > 0 {
				start := time.Now()
				if err := sess.Set(cmd.Context(), cfgs...); err != nil {
					if errors.Is(err, patch.ErrFingerprint) && !force {
						return fmt.Errorf("%w (--force applies it anyway when the shapes fit)", fingerprintError(err))
					}
					return err
				}
				fmt.Fprintf(w, "patched %d adapter(s) in %v\n", len(cfgs), time.Since(start).Round(time.Microsecond))
				printSurvival(w, cmd.ErrOrStderr(), sess.Survival(), minLanded)
			}
			outs, err := sess.Run(cmd.Context(), feeds)
			if errors.Is(err, ort.ErrInput) {
				return fmt.Errorf("%w\nthe model's inputs, each given as --input NAME=FILE.npy:%s", err, inputsText(sess.Inputs()))
			}
			if err != nil {
				return err
			}
			files, err := writeTensors(outDir, "", outs)
			if err != nil {
				return err
			}
			for _, n := range slices.Sorted(maps.Keys(outs)) {
				fmt.Fprintf(w, "%s %v %v -> %s\n", n, outs[n].DType, outs[n].Shape, filepath.Join(outDir, files[n]))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "exported model directory (or a plain .onnx file, without --adapter)")
	f.StringArrayVar(&adapters, "adapter", nil, adapterUsage)
	f.StringArrayVar(&inputs, "input", nil, "model input as NAME=FILE.npy (repeatable)")
	f.StringVar(&outDir, "output-dir", "", "directory for the outputs, one NAME.npy each (characters a file name cannot hold, such as '/' and ':', written as %XX)")
	f.IntVar(&threads, "threads", 0, "intra-op threads (0: ONNX Runtime's default)")
	f.BoolVar(&force, "force", false, forceUsage)
	f.Float64Var(&minLanded, "min-landed", 0.5, minLandedUsage)
	f.Var(&rounding, "rounding", roundingUsage)
	f.StringVar(&mode, "mode", ort.DefaultMode.String(), "session mode: packed (patch the prepacked weights ORT computes with; falls back to hybrid where it does not apply), live (patch the unpacked weights ORT reads in place), baked (rebuild a prepacked session per switch) or hybrid (live at once, baked in the background)")
	provs.register(f)
	markRequired(cmd, "model", "output-dir")
	return cmd
}

// openForRun opens an exported model directory, or a plain .onnx file (a
// fused model from `apply`, or any model) when no adapter is asked for.
func openForRun(ctx context.Context, model string, opts *ort.Options, adapters bool) (*ort.Session, error) {
	st, err := os.Stat(model)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return ort.Open(ctx, model, opts)
	}
	if adapters {
		return nil, fmt.Errorf("--adapter needs an exported model directory (shira-ort export), not the file %s", model)
	}
	return ort.OpenModel(ctx, model, opts)
}

// fingerprintError returns the patch package's fingerprint error inside
// err, without the advice ort adds for Go callers (a field of
// ort.Options), so that the CLI can name its own flag instead; err itself
// when ort added nothing.
func fingerprintError(err error) error {
	if inner := errors.Unwrap(err); inner != nil && inner != patch.ErrFingerprint && errors.Is(inner, patch.ErrFingerprint) {
		return inner
	}
	return err
}

// readInputFlags reads the --input NAME=FILE.npy flags.
func readInputFlags(flags []string) (map[string]*tensor.Tensor, error) {
	feeds := map[string]*tensor.Tensor{}
	for _, in := range flags {
		name, file, ok := strings.Cut(in, "=")
		if !ok || name == "" || file == "" {
			return nil, fmt.Errorf("--input %q: want NAME=FILE.npy", in)
		}
		t, err := npyfile.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--input %s: %w", name, err)
		}
		feeds[name] = t
	}
	return feeds, nil
}

// inputsText lists a model's inputs, one per line: name, dtype and shape
// (symbolic dimensions by name).
func inputsText(ins []ort.IOInfo) string {
	var b strings.Builder
	for _, in := range ins {
		fmt.Fprintf(&b, "\n  %s: %v %s", in.Name, in.DType, shapeText(in.Shape, in.SymbolicDims))
	}
	return b.String()
}

// safeFileName turns a tensor name into a file name (before ".npy"): an
// ordinary name ("logits", "a_b", "y.0") is kept as it is; a byte a file
// name cannot hold or that would surprise — '/', '\', ':', control
// characters, the characters Windows refuses (<>"|?*) and a leading '.' —
// is written as %XX (its hex value), and so is '%' itself. Distinct names
// therefore give distinct files ("a/b", "a:b" and "a_b" become a%2Fb, a%3Ab
// and a_b), and a file name can be turned back into its tensor name.
func safeFileName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || strings.IndexByte(`%/\:<>"|?*`, c) >= 0 || (i == 0 && c == '.') {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
