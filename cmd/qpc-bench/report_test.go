package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReportSubcommand runs `qpc-bench report` at toy sizes into a
// temporary directory: the markdown records the command, and the plots
// are written beside it.
func TestReportSubcommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every benchmark once, with a real server")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	args := []string{"--out", dir, "--ds-duration", "300ms", "--ds-senders", "2", "--kt-labels", "50",
		"--mls-sizes", "2,3", "--benchtime", "2x", "--rounds", "1"}
	if err := runReport(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("report: %v\n%s", err, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "wrote "+dir+"/benchmarks.md") {
		t.Errorf("output %q", out.String())
	}
	md, err := os.ReadFile(filepath.Join(dir, "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "`qpc-bench report " + strings.Join(args, " ") + "`"; !strings.Contains(string(md), want) {
		t.Errorf("benchmarks.md does not record the command %s", want)
	}
	for _, f := range []string{"ds_latency.png", "mls_commit.png", "ratios.png"} {
		if st, err := os.Stat(filepath.Join(dir, "bench", f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestReportFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--mls-sizes", "1,2"},
		{"--mls-sizes", "two"},
		{"--kt-labels", "0"},
		{"--rounds", "0"},
		{"--ds-duration", "0s"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		if err := runReport(context.Background(), append(args, "--out", t.TempDir()), &out, &errOut); err == nil {
			t.Errorf("%q: no error", args)
		}
		if out.Len() != 0 {
			t.Errorf("%q: wrote %q", args, out.String())
		}
	}
}
