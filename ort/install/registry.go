package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// RegistryEnv is the environment variable Registry reads first (npm's own
// name for the registry setting; the lower-case npm_config_registry that
// npm exports to scripts is read too).
const RegistryEnv = "NPM_CONFIG_REGISTRY"

// npmTimeout bounds `npm config get registry`.
const npmTimeout = 30 * time.Second

// Registry returns the npm registry base URL Library uses when
// Options.Registry is empty: $NPM_CONFIG_REGISTRY (or
// $npm_config_registry) when set, otherwise what `npm config get registry`
// prints when npm is on PATH (the registry npm itself would use, from the
// user's and the global npmrc). With neither, the error wraps ErrNoRegistry
// and says to pass a registry URL. The URL must be http or https.
func Registry(ctx context.Context) (string, error) {
	for _, k := range []string{RegistryEnv, strings.ToLower(RegistryEnv)} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			if _, err := checkRegistry(v); err != nil {
				return "", fmt.Errorf("%w (from $%s)", err, k)
			}
			return v, nil
		}
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("%w: $%s is not set and npm is not on PATH to ask; pass the registry's base URL (shira-ort setup --registry URL, or install.Options.Registry)",
			ErrNoRegistry, RegistryEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "config", "get", "registry")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		return "", fmt.Errorf("%w: `npm config get registry` failed: %w%s; set $%s or pass the registry's base URL (--registry URL)",
			ErrNoRegistry, err, firstLine(stderr.String()), RegistryEnv)
	}
	v := lastLine(string(out))
	if v == "" || v == "undefined" || v == "null" {
		return "", fmt.Errorf("%w: `npm config get registry` printed %q; set $%s or pass the registry's base URL (--registry URL)",
			ErrNoRegistry, v, RegistryEnv)
	}
	if _, err := checkRegistry(v); err != nil {
		return "", fmt.Errorf("%w (from `npm config get registry`)", err)
	}
	return v, nil
}

// lastLine returns the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// firstLine returns ": " and the first non-empty line of s, or "".
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	l, _, _ := strings.Cut(s, "\n")
	return ": " + strings.TrimSpace(l)
}
