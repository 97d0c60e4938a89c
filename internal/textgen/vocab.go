package textgen

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"
)

// Vocab maps characters to token ids and back.
type Vocab struct {
	// Chars holds the character of each token id.
	Chars []string `json:"chars"`
	// Unk is the id used for characters outside the vocabulary.
	Unk int `json:"unk"`
	// Context is the longest sequence the model accepts (its position
	// table); 0 means unlimited.
	Context int `json:"context"`

	index map[rune]int
}

// ParseVocab decodes a vocabulary file's JSON and checks it: every entry a
// single character, no duplicates, Unk in range.
func ParseVocab(b []byte) (*Vocab, error) {
	var v Vocab
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("textgen: vocabulary: %w", err)
	}
	if len(v.Chars) == 0 {
		return nil, fmt.Errorf("textgen: vocabulary has no characters")
	}
	if v.Unk < 0 || v.Unk >= len(v.Chars) {
		return nil, fmt.Errorf("textgen: vocabulary unk id %d out of range [0, %d)", v.Unk, len(v.Chars))
	}
	if v.Context < 0 {
		return nil, fmt.Errorf("textgen: vocabulary context %d is negative", v.Context)
	}
	v.index = make(map[rune]int, len(v.Chars))
	for i, c := range v.Chars {
		r, n := utf8.DecodeRuneInString(c)
		if n == 0 || n != len(c) || r == utf8.RuneError {
			return nil, fmt.Errorf("textgen: vocabulary entry %d (%q) is not one character", i, c)
		}
		if j, dup := v.index[r]; dup {
			return nil, fmt.Errorf("textgen: vocabulary entries %d and %d are both %q", j, i, c)
		}
		v.index[r] = i
	}
	return &v, nil
}

// LoadVocab reads and parses a vocabulary file.
func LoadVocab(path string) (*Vocab, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("textgen: %w", err)
	}
	return ParseVocab(b)
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return len(v.Chars) }

// Encode maps each character of s to its id (Unk when unknown).
func (v *Vocab) Encode(s string) []int64 {
	ids := make([]int64, 0, len(s))
	for _, r := range s {
		id, ok := v.index[r]
		if !ok {
			id = v.Unk
		}
		ids = append(ids, int64(id))
	}
	return ids
}

// Decode maps ids back to text; an id out of range becomes U+FFFD.
func (v *Vocab) Decode(ids []int64) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(v.Token(id))
	}
	return b.String()
}

// Token is the character of one id (U+FFFD when out of range).
func (v *Vocab) Token(id int64) string {
	if id < 0 || id >= int64(len(v.Chars)) {
		return "\uFFFD"
	}
	return v.Chars[id]
}
