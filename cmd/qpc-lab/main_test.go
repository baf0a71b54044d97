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
		{[]string{"predict"}, "usage: qpc-lab predict"},
		{[]string{"predict", "../../lab/scenarios/qpc-default.toml"}, "does not model cover traffic"},
		{[]string{"predict", "../../lab/scenarios/martiny-crowd.toml", "-lag", "-1s"}, "usage: qpc-lab predict"},
		{[]string{"report", "-out", t.TempDir(), "-live-only"}, "-live-only needs -live"},
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

// TestLabPredict: `predict` runs the SDA, both counts, on trace mode of a
// checked-in scenario's schedule and says how many targets it linked.
func TestLabPredict(t *testing.T) {
	var out, errOut bytes.Buffer
	err := dispatch(context.Background(), []string{"predict", "../../lab/scenarios/martiny-crowd.toml", "-users", "40", "-duration", "3h", "-speed", "15", "-lag", "50ms"}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	for _, want := range []string{"martiny-crowd seed=1 users=40 duration=3h0m0s speed=15 lag=50ms", "sda       linked ", "sda-epoch linked "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("predict printed %q, want %q in it", out.String(), want)
		}
	}
}
