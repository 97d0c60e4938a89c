package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/ort/install"
)

// newSetupCmd is `shira-ort setup`: ONNX Runtime's shared library into the
// user cache.
func newSetupCmd() *cobra.Command {
	var (
		o    install.Options
		arch string
	)
	cmd := &cobra.Command{
		Use:   "setup [--version V] [--arch x64|arm64] [--registry URL] [--tarball FILE] [--integrity SRI] [--cache-dir DIR]",
		Short: "Download the ONNX Runtime shared library into the user cache (once)",
		Long: `setup provides the ONNX Runtime shared library every other command loads. It takes
libonnxruntime.so.1 from the npm package onnxruntime-node (the prebuilt Linux x64 and arm64
libraries it ships), checks the tarball against the integrity hash the registry publishes,
and caches the one file:

  ${XDG_CACHE_HOME:-~/.cache}/shira-ort/onnxruntime/<version>/linux-<x64|arm64>/libonnxruntime.so.1

where shira-ort (and the ort Go package) finds it without configuration. Nothing is
downloaded when it is already there. npm itself is not needed.

The registry is --registry, else $NPM_CONFIG_REGISTRY (or $npm_config_registry), else what
` + "`npm config get registry`" + ` prints when npm is installed.

Offline: --tarball FILE installs from a downloaded onnxruntime-node-<version>.tgz (npm pack
makes one), checked against --integrity SRI, or without it against the registry's published
integrity.

Prints the library path and the export line that makes other programs (onnxruntime_go)
find it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if arch != "" {
				goarch, err := parseArch(arch)
				if err != nil {
					return err
				}
				o.GOARCH = goarch
			}
			o.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := install.Library(ctx, o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.Downloaded {
				fmt.Fprintf(w, "fetched: %s (%s@%s)\n", res.Path, install.Package, res.Version)
			} else {
				fmt.Fprintf(w, "cached: %s (%s@%s, nothing downloaded)\n", res.Path, install.Package, res.Version)
			}
			fmt.Fprintln(w, res.Path)
			fmt.Fprintf(w, "export %s=%s\n", ort.LibraryEnv, shellQuote(res.Path))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Version, "version", install.DefaultVersion, "onnxruntime-node `VERSION` (the ONNX Runtime release)")
	f.StringVar(&arch, "arch", "", "CPU architecture `ARCH` of the library: x64 (amd64) or arm64 (aarch64); default: this machine's. "+
		"Another architecture's library is cached beside this one's (e.g. for tests under qemu)")
	f.StringVar(&o.Registry, "registry", "", "npm registry base `URL` (default: $NPM_CONFIG_REGISTRY, else what npm config get registry prints)")
	f.StringVar(&o.Tarball, "tarball", "", "install from this onnxruntime-node-<version>.tgz `FILE` instead of downloading it (offline)")
	f.StringVar(&o.Integrity, "integrity", "", "expected integrity of the tarball, an `SRI` string such as sha512-BASE64 (default: the registry's dist.integrity)")
	f.StringVar(&o.CacheDir, "cache-dir", "", "cache root `DIR` instead of the user cache directory (the library goes under DIR/shira-ort/onnxruntime/; "+
		"then give its path to other commands through "+ort.LibraryEnv+")")
	return cmd
}

// parseArch maps --arch to a Go architecture name.
func parseArch(s string) (string, error) {
	switch strings.ToLower(s) {
	case "x64", "amd64", "x86_64":
		return "amd64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", fmt.Errorf("--arch %q: want x64 (amd64, x86_64) or arm64 (aarch64)", s)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// errorHint returns a line to print after err, or "": a missing ONNX
// Runtime library is fixed by `shira-ort setup`.
func errorHint(err error) string {
	if errors.Is(err, ort.ErrLibraryNotFound) {
		return "shira-ort: to install ONNX Runtime, run `shira-ort setup` (it downloads the library into the user cache once), then try again"
	}
	return ""
}
