package ortadapter

import (
	"testing"

	"github.com/shira-ort/shira-ort/internal/testutil"
)

// TestGeneratedCodeUpToDate: internal/ortfb is what flatc generates from
// schema/ort_adapter.fbs (the go:generate line in ortadapter.go).
func TestGeneratedCodeUpToDate(t *testing.T) {
	testutil.CheckFlatcOutput(t, ".", "schema/ort_adapter.fbs", "internal")
}
