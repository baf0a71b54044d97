package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLabCLIErrors: the dispatcher and `run` refuse what they cannot do,
// saying why, before any server starts.
func TestLabCLIErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("name = \"x\"\nusers = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand"},
		{[]string{"frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"run"}, "a scenario file and -out are required"},
		{[]string{"run", "../../lab/scenarios/qpc-default.toml"}, "a scenario file and -out are required"},
		{[]string{"run", "nonexistent.toml", "-out", t.TempDir()}, "no such file"},
		{[]string{"run", bad, "-out", t.TempDir()}, "users: 1: want 2.."},
		{[]string{"run", "../../lab/scenarios/qpc-default.toml", "-out", t.TempDir(), "-users", "5000"}, "at most 1000"},
		{[]string{"run", "../../lab/scenarios/qpc-default.toml", "-out", t.TempDir(), "-speed", "-2"}, "must not be negative"},
		{[]string{"run", "-out", t.TempDir(), "../../lab/scenarios/qpc-default.toml", "extra"}, "unexpected arguments"},
	} {
		var out, errOut bytes.Buffer
		err := dispatch(context.Background(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	var errOut bytes.Buffer
	if err := dispatch(context.Background(), []string{"help"}, &bytes.Buffer{}, &errOut); err != nil || !strings.Contains(errOut.String(), "run ") {
		t.Errorf("help: %v %q", err, errOut.String())
	}
}
