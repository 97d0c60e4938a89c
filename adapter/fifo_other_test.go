//go:build !unix

package adapter

import "errors"

func mkfifo(string) error { return errors.New("no FIFOs") }
