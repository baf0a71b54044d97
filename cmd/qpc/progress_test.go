package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/tor"
)

// syncBuffer is a bytes.Buffer safe for the progress goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressSlowWait(t *testing.T) {
	var out syncBuffer
	p := &progress{w: &out}
	stop := p.start("unlocking the local state", 20*time.Millisecond, 30*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	stop()
	got := out.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) < 2 || lines[0] != "qpc: unlocking the local state…" || lines[1] != "qpc: unlocking the local state… (still working)" {
		t.Fatalf("progress lines:\n%s", got)
	}
	// Nothing is printed after stop returned.
	time.Sleep(60 * time.Millisecond)
	if out.String() != got {
		t.Fatalf("printed after stop:\n%s", out.String())
	}
	stop() // twice is harmless
}

func TestProgressQuickWait(t *testing.T) {
	var out syncBuffer
	p := &progress{w: &out}
	stop := p.start("quick", 200*time.Millisecond, time.Second)
	stop()
	time.Sleep(250 * time.Millisecond)
	if out.String() != "" {
		t.Fatalf("a quick wait printed %q", out.String())
	}
}

func TestTorProgress(t *testing.T) {
	var out syncBuffer
	c := &cli{stderr: &out}
	report := c.torProgress()
	sum := "building a circuit to example.onion:443"
	report(tor.Progress{Stage: tor.StageConnect, Summary: sum})
	report(tor.Progress{Stage: tor.StageConnect, Summary: sum, Elapsed: 500 * time.Millisecond})
	if out.String() != "" {
		t.Fatalf("printed under a second: %q", out.String())
	}
	for s := 1; s <= 7; s++ {
		report(tor.Progress{Stage: tor.StageConnect, Summary: sum, Elapsed: time.Duration(s) * time.Second})
	}
	report(tor.Progress{Stage: tor.StageConnect, Percent: 100, Summary: "connected", Elapsed: 7200 * time.Millisecond})
	want := "qpc: tor: " + sum + "… (1s)\n" +
		"qpc: tor: " + sum + "… (6s)\n" +
		"qpc: tor: connected after 7.2s\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}
