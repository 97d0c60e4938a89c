// Command shira-bench runs the benchmark harnesses behind the numbers in
// README.md, docs/perf.md and docs/session-modes.md, and draws their plots.
// It is a separate binary so that installing the shira-ort CLI does not
// compile the plotting stack.
//
//	shira-bench sessions [--models mlp,llm] [--out PREFIX]   # live / baked / hybrid vs plain ORT
//	shira-bench switch [-o DIR]                              # SHiRA switch vs LoRA switch
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shira-bench:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shira-bench",
		Short:         "Benchmarks of shira-ort's switching and session modes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBenchCmd(), newBenchSwitchCmd(), newServeBenchCmd())
	return root
}
