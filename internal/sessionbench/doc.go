// Package sessionbench generates the benchmark models of
// docs/session-modes.md (an 8-layer 1024→4096→1024 MLP and a TinyLlama-
// shaped stack of MatMuls whose weights exceed 2 GB) and measures the
// session modes of package ort on them: steady-state Run latency against a
// plain ORT session, time from a switch until adapted outputs, time until
// a hybrid session is back at full speed, and peak and steady RSS (each
// measured in a child process). `go test -bench` in this package and
// `shira-bench sessions` both run it.
package sessionbench
