package main

import (
	"context"
	"errors"
	"io"
)

// runRun is `qpc-lab run`.
func runRun(ctx context.Context, args []string, out, errOut io.Writer) error {
	return errors.New("run: not implemented yet")
}
