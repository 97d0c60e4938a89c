package charlm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoText is returned by StyleText when the machine does not have the
// Debian packages a style's text comes from.
var ErrNoText = errors.New("charlm: style text not available on this machine")

// TextPackages lists the Debian packages the four styles' texts come from
// (besides base-files, which every Debian system has).
var TextPackages = []string{"fortunes", "fortunes-bofh-excuses", "man-db", "bsdextrautils"}

// The lists below are models/charlm/gen_charlm.py's; StyleText must read
// the texts exactly as that script did when it trained the model.
var (
	manPages = []string{
		"ls", "cp", "mv", "rm", "cat", "sort", "uniq", "head", "tail", "wc", "cut", "tr", "date", "chmod",
		"chown", "du", "df", "ln", "mkdir", "touch", "tee", "grep", "sed", "find", "tar", "split", "stat",
		"dd", "od", "install", "env", "nice", "timeout", "paste", "join", "comm", "seq", "printf", "basename",
		"dirname", "readlink", "realpath", "md5sum", "sha256sum", "base64", "shuf", "fold", "fmt", "nl", "pr",
		"xargs", "gzip", "diff", "cmp", "less", "man", "ps", "kill", "mount", "bash",
	}
	fortuneFiles = []string{"fortunes", "wisdom", "literature", "people", "humorists", "platitudes", "science",
		"love", "politics", "work", "education", "miscellaneous", "men-women", "pets"}
)

const (
	styleCap     = 300_000 // characters per style
	minStyleText = 20_000
	fortuneDir   = "/usr/share/games/fortunes"
)

// StyleText rebuilds a style's whole text (training and validation) as
// models/charlm/gen_charlm.py read it: legal is every file under
// /usr/share/common-licenses, bofh the bofh-excuses fortunes, fortunes the
// quotations of 14 fortune files, manpages 60 rendered man pages (man at
// 72 columns, col -bx); each is reduced to printable ASCII and cut at
// 300 000 characters. It returns an error matching ErrNoText when the
// packages are missing (TextPackages).
func StyleText(ctx context.Context, style string) (string, error) {
	var text string
	switch style {
	case "legal":
		paths, _ := filepath.Glob("/usr/share/common-licenses/*")
		sort.Strings(paths)
		seen := map[string]bool{}
		var parts []string
		for _, p := range paths {
			rp, err := filepath.EvalSymlinks(p)
			if err != nil || seen[rp] {
				continue
			}
			if st, err := os.Stat(rp); err != nil || !st.Mode().IsRegular() {
				continue
			}
			seen[rp] = true
			b, err := os.ReadFile(rp)
			if err != nil {
				return "", fmt.Errorf("charlm: %w", err)
			}
			parts = append(parts, string(b))
		}
		text = strings.Join(parts, "\n\n")
	case "bofh":
		es, err := fortuneEntries(filepath.Join(fortuneDir, "bofh-excuses"))
		if err != nil {
			return "", err
		}
		text = strings.Join(es, "\n\n") + "\n"
	case "fortunes":
		var parts []string
		for _, name := range fortuneFiles {
			es, err := fortuneEntries(filepath.Join(fortuneDir, name))
			if errors.Is(err, ErrNoText) {
				continue
			}
			if err != nil {
				return "", err
			}
			parts = append(parts, es...)
		}
		text = strings.Join(parts, "\n\n")
	case "manpages":
		var err error
		if text, err = renderManPages(ctx); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("charlm: unknown style %q", style)
	}
	text = asciiClean(text)
	if len(text) > styleCap {
		text = text[:styleCap]
	}
	if len(text) < minStyleText {
		return "", fmt.Errorf("%w: style %s has only %d characters of text (Debian packages: %s)",
			ErrNoText, style, len(text), strings.Join(TextPackages, " "))
	}
	return text, nil
}

// Validation returns a style's held-out text: the last 10 % of StyleText's
// characters, which the model and its adapters were not trained on.
func Validation(ctx context.Context, style string) (string, error) {
	t, err := StyleText(ctx, style)
	if err != nil {
		return "", err
	}
	return t[int(float64(len(t))*0.9):], nil
}

// fortuneEntries reads a fortune file's entries (separated by lines of a
// single %), without their surrounding newlines.
func fortuneEntries(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s (Debian packages: %s)", ErrNoText, path, strings.Join(TextPackages, " "))
	}
	if err != nil {
		return nil, fmt.Errorf("charlm: %w", err)
	}
	var out []string
	for _, e := range strings.Split(strings.ToValidUTF8(string(b), "\uFFFD"), "\n%\n") {
		if strings.TrimSpace(e) != "" {
			out = append(out, strings.Trim(e, "\n"))
		}
	}
	return out, nil
}

// renderManPages renders each page of manPages as the script did: plain
// text at 72 columns through col -bx; pages that are not installed are
// left out.
func renderManPages(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("man"); err != nil {
		return "", fmt.Errorf("%w: no man command (Debian packages: %s)", ErrNoText, strings.Join(TextPackages, " "))
	}
	env := append(os.Environ(), "MANWIDTH=72", "LANG=C.UTF-8", "MAN_KEEP_FORMATTING=0")
	var parts []string
	for _, page := range manPages {
		man := exec.CommandContext(ctx, "man", "-P", "cat", page)
		man.Env = env
		out, err := man.Output()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if err != nil {
			continue
		}
		col := exec.CommandContext(ctx, "col", "-bx")
		col.Stdin = bytes.NewReader(out)
		flat, err := col.Output()
		if err != nil {
			continue
		}
		parts = append(parts, strings.ToValidUTF8(string(flat), "\uFFFD"))
	}
	return strings.Join(parts, "\n\n"), nil
}

// asciiClean keeps newlines and printable ASCII, writing a few typographic
// characters as their ASCII forms and tabs as four spaces, and drops every
// other character.
func asciiClean(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch r {
		case '\t':
			b.WriteString("    ")
		case '\u2018', '\u2019':
			b.WriteByte('\'')
		case '\u201c', '\u201d':
			b.WriteByte('"')
		case '\u2010', '\u2013', '\u2212':
			b.WriteByte('-')
		case '\u2014':
			b.WriteString("--")
		case '\u00a0':
			b.WriteByte(' ')
		case '\u2022', '\u00b7':
			b.WriteByte('*')
		case '\u2026':
			b.WriteString("...")
		default:
			if r == '\n' || (r >= ' ' && r <= '~') {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}
