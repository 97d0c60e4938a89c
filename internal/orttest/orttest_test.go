package orttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRequireFailsUnderCI runs TestRequireHelper in a child process whose
// ONNX Runtime library path names a missing file: under CI=true the child
// must fail (not skip), elsewhere it must skip.
func TestRequireFailsUnderCI(t *testing.T) {
	if os.Getenv("ORTTEST_CHILD") != "" {
		t.Skip("child process")
	}
	missing := filepath.Join(t.TempDir(), "libonnxruntime.so.missing")
	for _, c := range []struct {
		ci      string
		wantErr bool
		want    string
	}{{"true", true, "required under CI=true"}, {"", false, "SKIP"}} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestRequireHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "ORTTEST_CHILD=1", "CI="+c.ci, "ONNXRUNTIME_SHARED_LIBRARY_PATH="+missing)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.wantErr || !strings.Contains(string(out), c.want) {
			t.Errorf("CI=%q: err %v, want error %v and %q in:\n%s", c.ci, err, c.wantErr, c.want, out)
		}
	}
}

// TestRequireHelper is the child of TestRequireFailsUnderCI.
func TestRequireHelper(t *testing.T) {
	if os.Getenv("ORTTEST_CHILD") == "" {
		t.Skip("run by TestRequireFailsUnderCI")
	}
	Require(t)
}
