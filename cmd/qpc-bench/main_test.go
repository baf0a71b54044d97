package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestRunPrintsOneJSONLine runs the command end to end with a short
// scenario and checks the one line it prints carries every field the
// result promises, with sane values.
func TestRunPrintsOneJSONLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	args := []string{"--duration", "500ms", "--senders", "4", "--senders-per-conn", "1", "--drain", "5s", "--scenario", "cmd-test"}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line, got %d: %q", len(lines), out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	for _, k := range []string{"scenario", "messages", "msgs_per_s", "baseline_msgs_per_s", "ratio", "p50_ms", "p99_ms",
		"lost", "duplicates", "record_bytes", "senders", "duration_s", "store_commits", "mean_batch"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %s", k, lines[0])
		}
	}
	num := func(k string) float64 { f, _ := m[k].(float64); return f }
	if m["scenario"] != "cmd-test" || num("senders") != 4 || num("record_bytes") != 2048 || num("sender_conns") != 4 {
		t.Errorf("flags not applied: %s", lines[0])
	}
	if num("messages") <= 0 || num("baseline_msgs_per_s") <= 0 || num("ratio") <= 0 {
		t.Errorf("no traffic measured: %s", lines[0])
	}
	if num("lost") != 0 || num("duplicates") != 0 || num("corrupt") != 0 {
		t.Errorf("delivery not exactly once: %s", lines[0])
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--senders", "0"},
		{"--record-size", "3000"}, // not a bucket of the default policy
		{"--duration", "0s"},
		{"extra"},
		{"--no-such-flag"},
	} {
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := run(ctx, append(args, "--baseline=false"), &out, &errOut)
		cancel()
		if err == nil {
			t.Errorf("run(%q) succeeded: %s", args, out.String())
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) printed a result: %s", args, out.String())
		}
	}
}
