// Package closest ranks names by edit distance, for "did you mean" hints in
// error messages (an unknown adapter target, an unmapped PEFT module), and
// shortens names for those messages.
//
// Names come from untrusted files and may be megabytes long: [Rank]
// compares names of at most [MaxCompare] bytes exactly and bounds the rest
// cheaply, and [Quote] and [Elide] keep at most about [MaxShown] bytes of a
// name, so neither the time to build a message nor its length depends on
// the length of a name.
package closest

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxCompare is the longest name, in bytes, whose edit distance [Rank]
// computes; a longer name is never similar to anything.
const MaxCompare = 256

// MaxShown is the longest name, in bytes, that [Quote] and [Elide] show
// whole; of a longer one they show the first and last MaxShown/2 bytes
// (or a little less, so as not to split a UTF-8 character).
const MaxShown = 96

// Match is a candidate and its distance from the name looked for.
type Match struct {
	Name     string
	Distance int
}

// Rank returns every candidate with its Levenshtein distance from name,
// nearest first (ties by name). Duplicate candidates are kept once. When
// name or a candidate is longer than [MaxCompare] bytes, the distance is
// not computed: it is reported as the length of the longer of the two (an
// upper bound, at least their length difference), so a long name is never
// ranked close by mistake and the cost of Rank stays
// O(len(candidates)·MaxCompare²) whatever the lengths.
func Rank(name string, candidates []string) []Match {
	seen := make(map[string]bool, len(candidates))
	out := make([]Match, 0, len(candidates))
	for _, c := range candidates {
		if !seen[c] {
			seen[c] = true
			out = append(out, Match{c, boundedDistance(name, c)})
		}
	}
	slices.SortFunc(out, func(a, b Match) int {
		if a.Distance != b.Distance {
			return a.Distance - b.Distance
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// boundedDistance is Distance(a, b) when both are at most MaxCompare
// bytes long, else max(len(a), len(b)).
func boundedDistance(a, b string) int {
	if len(a) > MaxCompare || len(b) > MaxCompare {
		return max(len(a), len(b))
	}
	return Distance(a, b)
}

// Distance is the Levenshtein distance between a and b, counted in bytes.
// It takes time O(len(a)·len(b)): for names from files use [Rank], which
// bounds it.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Quote returns name as a Go string literal ([strconv.Quote]) when it is
// at most [MaxShown] bytes long; of a longer name it quotes the head and
// the tail and says how many bytes lie between them:
//
//	"model.layers.0.self_a"…(3999904 bytes)…"n.q_proj.weight"
func Quote(name string) string {
	head, tail, ok := split(name)
	if !ok {
		return strconv.Quote(name)
	}
	return strconv.Quote(head) + elided(name, head, tail) + strconv.Quote(tail)
}

// Elide is [Quote] without the quotes, for messages that print names
// bare: name itself when it is at most [MaxShown] bytes long, else its
// head and tail around "…(N bytes)…".
func Elide(name string) string {
	head, tail, ok := split(name)
	if !ok {
		return name
	}
	return head + elided(name, head, tail) + tail
}

// split returns the head and tail of name that Quote and Elide show, and
// false when name is short enough to show whole.
func split(name string) (head, tail string, ok bool) {
	if len(name) <= MaxShown {
		return "", "", false
	}
	h, t := MaxShown/2, len(name)-MaxShown/2
	for h > 0 && !utf8.RuneStart(name[h]) { // do not split a character
		h--
	}
	for t < len(name) && !utf8.RuneStart(name[t]) {
		t++
	}
	return name[:h], name[t:], true
}

// elided is the marker between the head and the tail of name.
func elided(name, head, tail string) string {
	return "…(" + strconv.Itoa(len(name)-len(head)-len(tail)) + " bytes)…"
}
