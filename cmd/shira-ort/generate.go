package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/textgen"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/patch"
)

// newGenerateCmd is `shira-ort generate`: sample text from a character
// language model (the shipped charlm by default) with adapters switched in.
func newGenerateCmd() *cobra.Command {
	var (
		model, vocab, prompt string
		adapters             []string
		n, topK, threads     int
		temp                 float64
		seed                 uint64
	)
	cmd := &cobra.Command{
		Use:   "generate [--model DIR --vocab vocab.json] [--adapter A[:ALPHA]]... [--prompt TEXT]",
		Short: "Generate text with a character language model, adapters switched into the live session",
		Long: `generate samples text from a character-level language model (int64 tokens [1, T] ->
float32 logits [1, T, V]) and streams it to the terminal. Without --model it uses the shipped
charlm model (models/charlm), exported into a temporary directory; its SHiRA adapters are then
named by style (` + fmt.Sprint(charlm.Styles()) + `). An --adapter is otherwise a .shira file or a
PEFT SHiRA checkpoint directory (converted on the fly); several are fused, each at ALPHA.
The same --seed gives the same text for the same weights.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			tmp, err := os.MkdirTemp("", "shira-generate-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			styles := map[string]string{}
			if model == "" {
				ws, err := charlm.Prepare(cmd.Context(), tmp)
				if err != nil {
					return err
				}
				ws.Close()
				model, styles = ws.Exported, ws.Shira
				if vocab == "" {
					vocab = ws.Vocab
				}
			}
			if vocab == "" {
				vocab = findVocab(model)
			}
			v, err := textgen.LoadVocab(vocab)
			if err != nil {
				return err
			}
			if err := ort.Init(); err != nil {
				return err
			}
			sess, err := ort.Open(cmd.Context(), model, &ort.Options{IntraOpThreads: threads, Mode: ort.ModeLive, CheckFinite: true})
			if err != nil {
				return err
			}
			defer sess.Close()
			cfgs, closeAll, err := resolveGenerateAdapters(adapters, styles, model, tmp)
			if err != nil {
				return err
			}
			defer closeAll()
			if len(cfgs) > 0 {
				if err := sess.Set(cmd.Context(), cfgs...); err != nil {
					return err
				}
			}
			m := &textgen.Model{R: sess, Vocab: v}
			fmt.Fprint(w, prompt)
			_, err = m.Generate(cmd.Context(), prompt, n, textgen.SampleOptions{Temperature: temp, TopK: topK, Seed: seed},
				func(s string) error { _, err := io.WriteString(w, s); return err })
			fmt.Fprintln(w)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "exported model directory (default: the shipped charlm)")
	f.StringVar(&vocab, "vocab", "", "vocabulary JSON (default: vocab.json in or beside --model)")
	f.StringArrayVar(&adapters, "adapter", nil, "adapter STYLE, A.shira or PEFT dir, optionally :ALPHA (repeatable: fused)")
	f.StringVar(&prompt, "prompt", "", "text to continue")
	f.IntVarP(&n, "length", "n", 300, "characters to generate")
	f.Float64Var(&temp, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&topK, "top-k", 40, "sample among the K most likely characters (0: all)")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.IntVar(&threads, "threads", 1, "ONNX Runtime intra-op threads (0: ORT default)")
	return cmd
}

// findVocab looks for vocab.json in the exported directory, then beside it.
func findVocab(model string) string {
	for _, p := range []string{filepath.Join(model, "vocab.json"), filepath.Join(filepath.Dir(model), "vocab.json")} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(model, "vocab.json")
}

// resolveGenerateAdapters opens each --adapter: a style of the shipped
// model, a .shira file, or a PEFT SHiRA directory converted into tmp.
func resolveGenerateAdapters(flags []string, styles map[string]string, model, tmp string) ([]patch.Config, func(), error) {
	return openAdapters(flags, func(i int, path string) (string, error) {
		if p, ok := styles[path]; ok {
			return p, nil
		}
		if st, err := os.Stat(path); err != nil || !st.IsDir() {
			return path, nil
		}
		m, err := openExported(model)
		if err != nil {
			return "", err
		}
		defer m.Close()
		out := filepath.Join(tmp, fmt.Sprintf("adapter-%d.shira", i))
		if err := charlm.ConvertShira(path, m, filepath.Base(path), out); err != nil {
			return "", err
		}
		return out, nil
	})
}
