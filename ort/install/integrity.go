package install

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"hash"
	"strings"
)

// integrity is a parsed Subresource Integrity string, reduced to its
// strongest supported algorithm.
type integrity struct {
	alg     string // "sha512", "sha384" or "sha256"
	newHash func() hash.Hash
	digests [][]byte // every listed digest of alg (any one may match)
	text    string   // the original string, for messages
}

// algorithms lists the supported hashes, strongest first.
var algorithms = []struct {
	name    string
	newHash func() hash.Hash
	size    int
}{
	{"sha512", sha512.New, sha512.Size},
	{"sha384", sha512.New384, sha512.Size384},
	{"sha256", sha256.New, sha256.Size},
}

// parseIntegrity parses an SRI string ("sha512-<base64> [sha1-...] ...",
// options after "?" ignored) and keeps the strongest supported algorithm.
// Other algorithms (npm's legacy sha1) are ignored; a string without any
// supported one, or with a malformed digest of one, is an error.
func parseIntegrity(s string) (*integrity, error) {
	digests := map[string][][]byte{}
	for _, tok := range strings.Fields(s) {
		alg, b64, ok := strings.Cut(tok, "-")
		if !ok {
			return nil, fmt.Errorf("install: integrity %q: %q is not ALGORITHM-BASE64", s, tok)
		}
		b64, _, _ = strings.Cut(b64, "?")
		for _, a := range algorithms {
			if a.name != alg {
				continue
			}
			d, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return nil, fmt.Errorf("install: integrity %q: %s digest is not base64: %w", s, alg, err)
			}
			if len(d) != a.size {
				return nil, fmt.Errorf("install: integrity %q: %s digest has %d bytes, want %d", s, alg, len(d), a.size)
			}
			digests[alg] = append(digests[alg], d)
		}
	}
	for _, a := range algorithms {
		if ds := digests[a.name]; len(ds) > 0 {
			return &integrity{alg: a.name, newHash: a.newHash, digests: ds, text: strings.TrimSpace(s)}, nil
		}
	}
	return nil, fmt.Errorf("install: integrity %q has no sha512, sha384 or sha256 digest", s)
}

// matches reports whether sum (of i.alg) is one of the listed digests.
func (i *integrity) matches(sum []byte) bool {
	for _, d := range i.digests {
		if bytes.Equal(d, sum) {
			return true
		}
	}
	return false
}

// format renders sum as an SRI token.
func (i *integrity) format(sum []byte) string {
	return i.alg + "-" + base64.StdEncoding.EncodeToString(sum)
}
