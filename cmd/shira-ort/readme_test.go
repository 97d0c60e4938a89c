package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shira-ort/shira-ort/internal/demo/charlm"
	"github.com/shira-ort/shira-ort/internal/npyfile"
	"github.com/shira-ort/shira-ort/internal/orttest"
	"github.com/shira-ort/shira-ort/models"
	"github.com/shira-ort/shira-ort/ort/install"
	"github.com/shira-ort/shira-ort/tensor"
)

// TestReadmeCLILines runs every line of the README's sh code blocks that
// starts with "shira-ort ", so the README cannot drift from the CLI.
//
// A line's notation is expanded into concrete command lines: a|b takes each
// alternative, [X] is X or nothing, X... is X once or twice (a flag's value
// with "..." repeats the flag too). Not every combination is run: each
// alternative at least once, each line as few times as that takes. The
// capitalised placeholders (DIR, A.shira, PEFT_DIR, ...) are replaced by
// small fixtures: the tiny model (models.Tiny), the PEFT fixtures in
// models/peft, the charlm demo model for generate, and files that earlier
// lines write (FUSED.onnx, BUNDLE). setup runs against a fake registry
// serving a fake onnxruntime-node package, with the user cache in a
// temporary directory. A placeholder the test does not know, or a run that
// fails, fails the test. Nothing is skipped: the device line
// (devicetest run) runs on this machine's CPU.
func TestReadmeCLILines(t *testing.T) {
	orttest.Require(t) // loaded now, before setup's lines point the user cache elsewhere
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := readmeCLILines(string(readme))
	if len(lines) < 10 {
		t.Fatalf("found %d CLI lines in the README's sh blocks", len(lines))
	}
	checkEveryCommandListed(t, lines)
	worlds := newReadmeWorlds(t)
	for _, l := range lines {
		t.Run(l.text, func(t *testing.T) {
			cmd := strings.Fields(l.text)[0]
			w := worlds.forCommand(t, cmd)
			n := 0
			for _, variant := range expandUsage(l.text) {
				args, err := w.substitute(strings.Fields(variant))
				if err != nil {
					t.Fatalf("README line %d: %v", l.line, err)
				}
				run := runCLI
				if cmd == "serve" {
					run = runServeLine
				}
				if out, err := run(t, args...); err != nil {
					t.Errorf("README line %d as `shira-ort %s`: %v\n%s", l.line, variant, err, out)
				}
				n++
			}
			t.Logf("ran %d variant(s) of README line %d", n, l.line)
		})
	}
}

// readmeLine is a CLI line of the README, without "shira-ort " and its
// comment.
type readmeLine struct {
	line int // 1-based line number in README.md
	text string
}

// readmeCLILines returns the lines starting with "shira-ort " inside the
// README's ```sh code blocks.
func readmeCLILines(readme string) []readmeLine {
	var out []readmeLine
	inSh := false
	for i, l := range strings.Split(readme, "\n") {
		switch {
		case strings.HasPrefix(l, "```"):
			inSh = !inSh && strings.TrimPrefix(l, "```") == "sh"
		case inSh && strings.HasPrefix(l, "shira-ort "):
			cmd, _, _ := strings.Cut(strings.TrimPrefix(l, "shira-ort "), " #")
			out = append(out, readmeLine{line: i + 1, text: strings.TrimSpace(cmd)})
		}
	}
	return out
}

// checkEveryCommandListed fails when a command of the CLI (a subcommand of
// devicetest counts as "devicetest make") has no README line.
func checkEveryCommandListed(t *testing.T, lines []readmeLine) {
	t.Helper()
	listed := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l.text)
		listed[f[0]] = true
		if len(f) > 1 {
			listed[f[0]+" "+f[1]] = true
		}
	}
	for _, c := range newRootCmd().Commands() {
		if !c.IsAvailableCommand() || c.Name() == "help" {
			continue
		}
		names := []string{c.Name()}
		if c.HasSubCommands() {
			names = names[:0]
			for _, s := range c.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, c.Name()+" "+s.Name())
				}
			}
		}
		for _, n := range names {
			if !listed[n] {
				t.Errorf("the README's CLI section has no line for `shira-ort %s`", n)
			}
		}
	}
}

// usageNode is a piece of a README CLI line's notation; variant i of it
// (0 <= i < width) is one concrete text, and the variants 0..width-1
// together take every alternative inside it at least once.
type usageNode interface {
	width() int
	variant(i int) string
}

// literal is text without notation.
type literal string

// width is 1: a literal has one variant.
func (l literal) width() int { return 1 }

// variant is the text.
func (l literal) variant(int) string { return string(l) }

// sequence is nodes one after the other, separated by sep (" " between
// words, "" inside a word); variant i takes variant i of each node.
type sequence struct {
	nodes []usageNode
	sep   string
}

// width is the largest of the nodes' widths.
func (s sequence) width() int {
	w := 1
	for _, n := range s.nodes {
		w = max(w, n.width())
	}
	return w
}

// variant joins variant i (modulo its width) of every node.
func (s sequence) variant(i int) string {
	parts := make([]string, len(s.nodes))
	for k, n := range s.nodes {
		parts[k] = n.variant(i % n.width())
	}
	return strings.Join(parts, s.sep)
}

// choice is a|b|... and [X] (a choice of "" and X): its variants are each
// option's variants in turn.
type choice []usageNode

// width is the sum of the options' widths.
func (c choice) width() int {
	w := 0
	for _, n := range c {
		w += n.width()
	}
	return w
}

// variant is variant i of the options' variants laid end to end.
func (c choice) variant(i int) string {
	for _, n := range c {
		if i < n.width() {
			return n.variant(i)
		}
		i -= n.width()
	}
	panic("choice: variant out of range")
}

// repeated is X...: X once (even variants) or twice (odd ones).
type repeated struct{ x usageNode }

// width covers X's variants and both counts.
func (r repeated) width() int { return max(r.x.width(), 2) }

// variant is X's variant i, twice when i is odd.
func (r repeated) variant(i int) string {
	v := r.x.variant(i % r.x.width())
	if i%2 == 1 {
		return v + " " + v
	}
	return v
}

// expandUsage returns the concrete command lines of a README CLI line.
func expandUsage(line string) []string {
	p := &usageParser{s: line}
	n := p.words()
	if p.pos != len(p.s) {
		panic(fmt.Sprintf("README line %q: unexpected %q at %d", line, p.s[p.pos], p.pos))
	}
	out := make([]string, n.width())
	for i := range out {
		out[i] = strings.Join(strings.Fields(n.variant(i)), " ")
	}
	return out
}

// usageParser parses the notation of a README CLI line.
type usageParser struct {
	s   string
	pos int
}

// words parses space-separated words up to a closing ']' or the end. A
// repeated word that is a flag's value ("--adapter A.shira...") repeats
// together with the flag.
func (p *usageParser) words() usageNode {
	var nodes []usageNode
	for {
		for p.pos < len(p.s) && p.s[p.pos] == ' ' {
			p.pos++
		}
		if p.pos == len(p.s) || p.s[p.pos] == ']' {
			return sequence{nodes: nodes, sep: " "}
		}
		w := p.word()
		if r, ok := w.(repeated); ok && len(nodes) > 0 {
			if flag, ok := nodes[len(nodes)-1].(literal); ok && strings.HasPrefix(string(flag), "-") {
				nodes[len(nodes)-1] = repeated{sequence{nodes: []usageNode{flag, r.x}, sep: " "}}
				continue
			}
		}
		nodes = append(nodes, w)
	}
}

// word parses one word: literal runs (alternatives split at '|') and
// [optional] groups written together, and a trailing "..." repeating it.
func (p *usageParser) word() usageNode {
	var parts []usageNode
	repeat := false
	for p.pos < len(p.s) && p.s[p.pos] != ' ' && p.s[p.pos] != ']' {
		if p.s[p.pos] == '[' {
			p.pos++
			inner := p.words()
			if p.pos == len(p.s) {
				panic(fmt.Sprintf("README line %q: unclosed [", p.s))
			}
			p.pos++ // ']'
			parts = append(parts, choice{literal(""), inner})
			continue
		}
		end := p.pos
		for end < len(p.s) && !strings.ContainsRune(" []", rune(p.s[end])) {
			end++
		}
		run := p.s[p.pos:end]
		p.pos = end
		if r, ok := strings.CutSuffix(run, "..."); ok {
			run, repeat = r, true
		}
		if run == "" {
			continue
		}
		if !strings.Contains(run, "|") {
			parts = append(parts, literal(run))
			continue
		}
		var alts choice
		for _, a := range strings.Split(run, "|") {
			alts = append(alts, literal(a))
		}
		parts = append(parts, alts)
	}
	var w usageNode = sequence{nodes: parts, sep: ""}
	if len(parts) == 1 {
		w = parts[0] // a plain literal stays one, so words can tell a flag
	}
	if repeat {
		w = repeated{w}
	}
	return w
}

// readmeWorld maps the placeholders of some commands' lines to fixtures.
type readmeWorld struct {
	// values maps a placeholder to its values; "FLAG PLACEHOLDER" keys
	// override it as that flag's value (--tuned DIR). A placeholder that
	// occurs n times in a command line takes the last n values, in order
	// (the last value alone when it occurs once; the first value again when
	// it occurs more often than it has values).
	values map[string][]string
}

// placeholder matches a capitalised placeholder: DIR, A.shira, FILE.npy.
var placeholder = regexp.MustCompile(`\b[A-Z][A-Z0-9_]*(\.[a-z_]+)?\b`)

// substitute replaces the placeholders in args; an unknown one is an
// error.
func (w *readmeWorld) substitute(args []string) ([]string, error) {
	// key returns the values key for placeholder ph in args[i].
	key := func(i int, ph string) string {
		if i > 0 && strings.HasPrefix(args[i-1], "-") {
			if _, ok := w.values[args[i-1]+" "+ph]; ok {
				return args[i-1] + " " + ph
			}
		}
		return ph
	}
	count := map[string]int{}
	for i, a := range args {
		for _, ph := range placeholder.FindAllString(a, -1) {
			count[key(i, ph)]++
		}
	}
	out := make([]string, len(args))
	seen := map[string]int{}
	var unknown []string
	for i, a := range args {
		out[i] = placeholder.ReplaceAllStringFunc(a, func(ph string) string {
			k := key(i, ph)
			vals, ok := w.values[k]
			if !ok {
				unknown = append(unknown, ph)
				return ph
			}
			j := max(len(vals)-count[k]+seen[k], 0)
			seen[k]++
			return vals[j]
		})
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("placeholder(s) %v in `shira-ort %s` have no fixture in readme_test.go", unknown, strings.Join(args, " "))
	}
	return out, nil
}

// one makes a values map of single values.
func one(kv map[string]string) map[string][]string {
	out := make(map[string][]string, len(kv))
	for k, v := range kv {
		out[k] = []string{v}
	}
	return out
}

// readmeWorlds holds the fixtures, made when a line first needs them.
type readmeWorlds struct {
	tmp                string
	tiny, peft, charlm *readmeWorld
}

// newReadmeWorlds keeps the fixtures in a temporary directory of t.
func newReadmeWorlds(t *testing.T) *readmeWorlds { return &readmeWorlds{tmp: t.TempDir()} }

// forCommand returns the fixtures for a command's lines: the charlm model
// for generate and demo, the PEFT fixtures for the converters, a fake
// registry for setup, the tiny model for the rest.
func (ws *readmeWorlds) forCommand(t *testing.T, cmd string) *readmeWorld {
	switch cmd {
	case "setup":
		return ws.setupWorld(t)
	case "generate", "demo":
		if ws.charlm == nil {
			ws.charlm = ws.charlmWorld(t)
		}
		return ws.charlm
	case "convert", "fuse-lora", "extract":
		if ws.peft == nil {
			ws.peft = ws.peftWorld(t)
		}
		return ws.peft
	}
	if ws.tiny == nil {
		ws.tiny = ws.tinyWorld(t)
	}
	return ws.tiny
}

// tinyWorld: the tiny MLP exported (DIR), two adapters for it, an input
// for x; FUSED.onnx, BUNDLE and the rest are written by the lines.
func (ws *readmeWorlds) tinyWorld(t *testing.T) *readmeWorld {
	dir := filepath.Join(ws.tmp, "tiny")
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("tiny.onnx"), models.Tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "export", p("tiny.onnx"), "-o", p("exported"))
	mustCLI(t, "create", "--model", p("exported"), "--density", "0.05", "--seed", "1", "-o", p("a.shira"))
	mustCLI(t, "create", "--model", p("exported"), "--mask", "wm", "--density", "0.05", "--seed", "2", "-o", p("b.shira"))
	x, err := tensor.FromFloat32([]int64{2, 16}, make([]float32, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := npyfile.WriteFile(p("x.npy"), x); err != nil {
		t.Fatal(err)
	}
	w := &readmeWorld{values: one(map[string]string{
		"MODEL.onnx": p("tiny.onnx"), "DIR": p("exported"), "A.shira": p("a.shira"), "B.shira": p("b.shira"),
		"ALPHA": "0.5", "NAME": "x", "FILE.npy": p("x.npy"), "OUT": p("out"),
		"FUSED.onnx": p("fused.onnx"), "BUNDLE": p("bundle"), "A.onnx_adapter": p("a.onnx_adapter"),
		"BAKED.shira": p("baked.shira"),
		"REGEX":       ".", // every weight: the export stays the one the other lines' adapters were made for
		"ADAPTER_DIR": dir, // a.shira and b.shira, among files that are not adapters
		"CHARLM_DIR":  filepath.Join(dir, "charlm-serve"),
		"ADDR":        "127.0.0.1:0", // runServeLine reads the port serve picked
	})}
	// --provider P once is cpu; twice, xnnpack then cpu (cpu must come
	// last). This ONNX Runtime build lacks xnnpack, so that needs
	// --provider-fallback: the lines' variants that repeat --provider set it.
	w.values["P"] = []string{"xnnpack", "cpu"}
	return w
}

// peftWorld: the PEFT fixtures (models/peft): the base model exported
// (DIR), the fine-tuned one exported for --tuned DIR, the SHiRA and LoRA
// checkpoints.
func (ws *readmeWorlds) peftWorld(t *testing.T) *readmeWorld {
	fixtures, err := filepath.Abs(filepath.Join("..", "..", "models", "peft"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(ws.tmp, "peft")
	p := func(n string) string { return filepath.Join(dir, n) }
	mustCLI(t, "export", filepath.Join(fixtures, "base.onnx"), "-o", p("base"))
	mustCLI(t, "export", filepath.Join(fixtures, "tuned_a.onnx"), "-o", p("tuned"))
	return &readmeWorld{values: one(map[string]string{
		"DIR": p("base"), "--tuned DIR": p("tuned"),
		"BASE.onnx": filepath.Join(fixtures, "base.onnx"), "TUNED.onnx": filepath.Join(fixtures, "tuned_a.onnx"),
		"--peft PEFT_DIR": filepath.Join(fixtures, "shira_a"), "--lora PEFT_DIR": filepath.Join(fixtures, "lora"),
		"A.shira": p("a.shira"), "FUSED.onnx": p("fused.onnx"),
	})}
}

// charlmWorld: a .shira adapter and a PEFT SHiRA checkpoint of the charlm
// model, which generate uses by default.
func (ws *readmeWorlds) charlmWorld(t *testing.T) *readmeWorld {
	w, err := charlm.Prepare(t.Context(), filepath.Join(ws.tmp, "charlm"))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return &readmeWorld{values: one(map[string]string{
		"A.shira": w.Shira["legal"], "PEFT_DIR": filepath.Join(w.Dir, "shira", "bofh"), "ALPHA": "0.5",
		"TEXT": "The ", "N": "3",
	})}
}

// setupWorld: a fake npm registry serving a fake onnxruntime-node package
// (the same tarball for every version), made the registry setup finds, and
// the user cache moved into a temporary directory for the calling (sub)test.
func (ws *readmeWorlds) setupWorld(t *testing.T) *readmeWorld {
	tarball := fakePackage(t)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/onnxruntime-node/")
		switch {
		case !ok:
			http.NotFound(w, r)
		case strings.HasPrefix(rest, "-/"):
			w.Write(tarball)
		default:
			json.NewEncoder(w).Encode(map[string]any{"name": "onnxruntime-node", "version": rest, "dist": map[string]string{
				"tarball": srv.URL + "/onnxruntime-node/-/onnxruntime-node-" + rest + ".tgz", "integrity": sri(tarball)}})
		}
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	t.Setenv(install.RegistryEnv, srv.URL)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "user-cache"))
	file := filepath.Join(dir, "onnxruntime-node-"+install.DefaultVersion+".tgz")
	if err := os.WriteFile(file, tarball, 0o644); err != nil {
		t.Fatal(err)
	}
	return &readmeWorld{values: one(map[string]string{
		"V": install.DefaultVersion, "URL": srv.URL, "FILE": file, "SRI": sri(tarball), "DIR": filepath.Join(dir, "cache"),
	})}
}

// TestExpandUsage pins the notation's expansion on README-like lines.
func TestExpandUsage(t *testing.T) {
	for line, want := range map[string][]string{
		"inspect DIR|A.shira [--json]": {"inspect DIR", "inspect A.shira --json"},
		"apply --adapter A.shira[:ALPHA]... -o F": {
			"apply --adapter A.shira -o F", "apply --adapter A.shira:ALPHA --adapter A.shira:ALPHA -o F"},
		"demo [--model charlm|tiny]":   {"demo", "demo --model charlm", "demo --model tiny"},
		"overlap A B... [--model DIR]": {"overlap A B", "overlap A B B --model DIR"},
		"run [--provider P]...":        {"run", "run --provider P --provider P"},
		"make --adapter A[:X][+B]...":  {"make --adapter A", "make --adapter A:X+B --adapter A:X+B"},
	} {
		if got := expandUsage(line); !slices.Equal(got, want) {
			t.Errorf("expandUsage(%q) =\n%q, want\n%q", line, got, want)
		}
	}
}

// lineWriter is an io.Writer that collects what is written, safely for a
// reader in another goroutine.
type lineWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runServeLine runs a README `shira-ort serve` line: the server must come
// up, answer its health, models and metrics endpoints, and stop cleanly
// (draining) when its context is cancelled, as on SIGTERM. It listens on a
// port the system picks (ADDR is 127.0.0.1:0, and a line without --listen
// gets that too instead of the default 8080: a fixed port may be taken on
// a CI machine), read from the "listening on" line serve prints.
func runServeLine(t testing.TB, args ...string) (string, error) {
	t.Helper()
	if !slices.Contains(args, "--listen") {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut lineWriter
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd()
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		done <- cmd.ExecuteContext(ctx)
	}()
	get := func(url string) (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	base := ""
	deadline := time.Now().Add(60 * time.Second)
	for base == "" {
		if _, rest, ok := strings.Cut(out.String(), "listening on "); ok {
			base, _, _ = strings.Cut(rest, "\n")
			break
		}
		select {
		case err := <-done:
			return out.String(), fmt.Errorf("serve exited before listening: %v\n%s", err, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return out.String(), fmt.Errorf("serve did not listen within 60 s\n%s", errOut.String())
		}
	}
	var problems []string
	if code, body, err := get(base + "/v2/health/ready"); err != nil || code != http.StatusOK {
		problems = append(problems, fmt.Sprintf("GET /v2/health/ready: %d %v %s", code, err, body))
	}
	if code, body, err := get(base + "/v1/models"); err != nil || code != http.StatusOK || !strings.Contains(body, `"object":"list"`) {
		problems = append(problems, fmt.Sprintf("GET /v1/models: %d %v %s", code, err, body))
	}
	if code, body, err := get(base + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "shira_adapters_registered") {
		problems = append(problems, fmt.Sprintf("GET /metrics: %d %v", code, err))
	}
	cancel()
	if err := <-done; err != nil {
		problems = append(problems, fmt.Sprintf("serve did not stop cleanly: %v", err))
	}
	if len(problems) > 0 {
		return out.String(), fmt.Errorf("%s\n%s", strings.Join(problems, "\n"), errOut.String())
	}
	return out.String(), nil
}
