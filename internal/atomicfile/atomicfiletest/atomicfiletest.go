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

// Paused is the line a child prints (followed by the temporary file's
// path) when it has stopped mid-write at the point PauseAt named.
const Paused = "PAUSED "

// PauseEnv is the environment variable internal/atomicfile reads once, at
// start-up, to stop the process at a chosen point of a write (atomicfile's
// tests check that both packages spell it, and Paused, the same way).
const PauseEnv = "SHIRA_ATOMICFILE_PAUSE"

// PauseAt returns the environment entry that makes a child process stop
// forever at stage ("write": after any Write; "commit": at the start of
// Commit) of writing the destination whose base name is file, after
// printing Paused and the temporary file's path. Pass it to
// KillWhilePaused.
func PauseAt(stage, file string) string { return PauseEnv + "=" + stage + ":" + file }

// KillWhilePaused starts cmd (with the extra environment), waits for a
// "PAUSED <tmp>" line on its standard output, kills it with SIGKILL, reaps
// it and returns <tmp>. Tests of packages that write through atomicfile
// pass PauseAt(...) in env so that the child prints that line and blocks.
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
