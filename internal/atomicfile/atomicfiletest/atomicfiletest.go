// Package atomicfiletest helps tests kill a process while it writes a file
// through internal/atomicfile. It is imported by tests only.
package atomicfiletest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Paused is the line a child prints (followed by the temporary file name)
// when its atomicfile.TestHook has stopped it mid-write.
const Paused = "PAUSED "

// KillWhilePaused starts cmd (with the extra environment), waits for a
// "PAUSED <tmp>" line on its standard output, kills it with SIGKILL, reaps
// it and returns <tmp>. Tests of packages that write through atomicfile
// use it with a TestHook that prints that line and blocks.
func KillWhilePaused(tb testing.TB, cmd *exec.Cmd, env ...string) string {
	tb.Helper()
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var all []string
		for sc.Scan() {
			if tmp, ok := strings.CutPrefix(sc.Text(), Paused); ok {
				lines <- tmp
				return
			}
			all = append(all, sc.Text())
		}
		lines <- "EXIT " + strings.Join(all, "\n")
	}()
	var tmp string
	select {
	case tmp = <-lines:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatalf("child did not pause within 2 minutes; stderr:\n%s", stderr.String())
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	if rest, exited := strings.CutPrefix(tmp, "EXIT "); exited {
		tb.Fatalf("child ended without pausing:\n%s\n%s", rest, stderr.String())
	}
	return tmp
}
