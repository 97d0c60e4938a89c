package registry

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/shira-ort/shira-ort/internal/closest"
)

// MaxNameLen is the longest adapter name, in bytes.
const MaxNameLen = 128

// CheckName reports whether name can name an adapter: non-empty, at most
// MaxNameLen bytes, valid UTF-8, no control characters and none of '/'
// (names become file names), ',' and '@' (a configuration of several
// adapters is written "name@alpha,name@alpha"). The error wraps
// ErrInvalidName.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %s is %d bytes long (at most %d)", ErrInvalidName, closest.Quote(name), len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidName, closest.Quote(name))
	}
	if i := strings.IndexAny(name, "/,@"); i >= 0 {
		return fmt.Errorf("%w: %s contains %q (names may not contain '/', ',' or '@')", ErrInvalidName, closest.Quote(name), name[i])
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%w: %s contains the control character %U", ErrInvalidName, closest.Quote(name), []rune(name[i:])[0])
	}
	return nil
}
