// Command shira-ort exports ONNX models with patchable weights, creates and
// inspects SHiRA adapters, fuses them offline, and runs models with adapters
// switched in and out of a live ONNX Runtime session.
//
//	shira-ort export MODEL.onnx -o DIR [--targets REGEX]
//	shira-ort inspect PATH [--json]
//	shira-ort create --model DIR --mask rand|wm --density 0.01 --scale S --seed N -o A.shira
//	shira-ort apply --model DIR --adapter A.shira[:ALPHA]... -o FUSED.onnx
//	shira-ort run --model DIR [--adapter A.shira[:ALPHA]]... --input NAME=FILE.npy... --output-dir OUT
//	shira-ort demo [--model charlm|tiny]
//	shira-ort generate [--adapter STYLE|A.shira|PEFT_DIR[:ALPHA]]... [--prompt TEXT]
//	shira-ort convert --peft DIR | --lora DIR --density D --model DIR -o A.shira
//	shira-ort fuse-lora --lora DIR --model DIR -o FUSED.onnx
//	shira-ort extract --base A --tuned B --density D -o A.shira
//	shira-ort overlap A.shira B.shira...
//	shira-ort devicetest --make BUNDLE ... | --bundle BUNDLE [--provider P]
//	shira-ort export-ort-adapter --model DIR --adapter A.shira -o A.onnx_adapter
//	shira-ort setup [--arch x64|arm64] [--version V] [--registry URL] [--tarball FILE] [--integrity SRI]
package main

import (
	"context"
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
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shira-ort:", err)
		if hint := errorHint(err); hint != "" {
			fmt.Fprintln(os.Stderr, hint)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "shira-ort",
		Short: "Sparse High Rank Adapters (SHiRA) for ONNX Runtime",
		Long: `shira-ort switches Sparse High Rank Adapters in and out of a live ONNX Runtime
session by writing their sparse values straight into the weights ORT reads.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newExportCmd(), newInspectCmd(), newCreateCmd(), newApplyCmd(), newRunCmd(), newDemoCmd(),
		newConvertCmd(), newFuseLoraCmd(), newExtractCmd(), newOverlapCmd(), newExportOrtAdapterCmd(),
		newDeviceTestCmd(), newGenerateCmd(), newSetupCmd())
	return root
}
