package adapter

import (
	"testing"

	"github.com/shira-ort/shira-ort/internal/testutil"
)

// TestGeneratedCodeUpToDate: internal/shirafb is what flatc generates from
// schema/shira.fbs (the go:generate line in doc.go).
func TestGeneratedCodeUpToDate(t *testing.T) {
	testutil.CheckFlatcOutput(t, ".", "schema/shira.fbs", "internal")
}
