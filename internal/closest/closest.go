// Package closest ranks names by edit distance, for "did you mean" hints in
// error messages (an unknown adapter target, an unmapped PEFT module).
package closest

import "slices"

// Match is a candidate and its distance from the name looked for.
type Match struct {
	Name     string
	Distance int
}

// Rank returns every candidate with its Levenshtein distance from name,
// nearest first (ties by name). Duplicate candidates are kept once.
func Rank(name string, candidates []string) []Match {
	seen := make(map[string]bool, len(candidates))
	out := make([]Match, 0, len(candidates))
	for _, c := range candidates {
		if !seen[c] {
			seen[c] = true
			out = append(out, Match{c, Distance(name, c)})
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

// Distance is the Levenshtein distance between a and b, counted in bytes.
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
