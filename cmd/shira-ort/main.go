// Command shira-ort exports ONNX models with patchable weights, creates and
// inspects SHiRA adapters, fuses them offline, and runs models with adapters
// switched in and out of a live ONNX Runtime session.
//
// `shira-ort --help` lists the commands and `shira-ort COMMAND --help` their
// flags; the README's "The CLI" section shows each in use (a test runs every
// line of it).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	// Ctrl-C or SIGTERM cancels the command's context: a Run in progress
	// is terminated through ONNX Runtime, long loops stop between steps.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd, err := newRootCmd().ExecuteContextC(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shira-ort:", err)
		for _, hint := range []string{usageHint(cmd, err), errorHint(err)} {
			if hint != "" {
				fmt.Fprintln(os.Stderr, hint)
			}
		}
		os.Exit(1)
	}
}

// newRootCmd returns the shira-ort command with every subcommand (main and
// the tests run it).
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "shira-ort",
		Short: "Sparse High Rank Adapters (SHiRA) for ONNX Runtime",
		Long: `shira-ort switches Sparse High Rank Adapters in and out of a live ONNX Runtime
session by writing their sparse values straight into the weights ORT reads.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return commandLineError{err} })
	root.AddCommand(newServeCmd(), newExportCmd(), newInspectCmd(), newCreateCmd(), newApplyCmd(), newRunCmd(), newDemoCmd(),
		newConvertCmd(), newBakeCmd(), newFuseLoraCmd(), newExtractCmd(), newOverlapCmd(), newExportOrtAdapterCmd(),
		newDeviceTestCmd(), newGenerateCmd(), newSetupCmd())
	return root
}

// markRequired marks flags of cmd as required: cobra refuses to run the
// command without them and names the missing ones.
func markRequired(cmd *cobra.Command, flags ...string) {
	for _, f := range flags {
		if err := cmd.MarkFlagRequired(f); err != nil {
			panic(fmt.Sprintf("%s: %v", cmd.Name(), err)) // a flag name the command does not define
		}
	}
}

// commandLineError is a flag cobra could not parse.
type commandLineError struct{ error }

// Unwrap returns pflag's error.
func (e commandLineError) Unwrap() error { return e.error }

// usageHint returns the usage line of cmd when err is about its command
// line (a flag cobra could not parse, a wrong number of arguments, a
// required flag missing, flags that do not go together), or "".
func usageHint(cmd *cobra.Command, err error) string {
	if cmd == nil || !cmd.Runnable() {
		return ""
	}
	var cle commandLineError
	if !errors.As(err, &cle) && cmd.ValidateArgs(cmd.Flags().Args()) == nil &&
		cmd.ValidateRequiredFlags() == nil && cmd.ValidateFlagGroups() == nil {
		return ""
	}
	return fmt.Sprintf("usage: %s\n(`%s --help` describes every flag)", cmd.UseLine(), cmd.CommandPath())
}
