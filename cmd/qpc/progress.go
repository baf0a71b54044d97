package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quicprochat/qpc/client/safetext"
	"github.com/quicprochat/qpc/tor"
)

// Progress on long waits. Every wait that lasts longer than a second says
// so on standard error, which keeps standard output clean for --json: the
// first line after progressAfter, then a "(still working)" line every
// progressEvery.
var (
	progressAfter = time.Second
	progressEvery = 5 * time.Second
)

// progress is a writer of progress lines shared by the waits of one
// command (tor dials may report from several goroutines).
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *progress) printf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, "qpc: "+safetext.Line(fmt.Sprintf(format, a...))) // tor's summaries come from outside
}

// start reports msg if the wait outlasts after, then every every; the
// returned stop ends the reports and returns once no more can be printed.
func (p *progress) start(msg string, after, every time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTimer(after)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
		}
		p.printf("%s…", msg)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.printf("%s… (still working)", msg)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done); <-exited })
	}
}

// wait is start with the default thresholds, on the CLI's standard error.
func (c *cli) wait(msg string) (stop func()) {
	return c.progressOut().start(msg, progressAfter, progressEvery)
}

func (c *cli) progressOut() *progress {
	if c.prog == nil {
		c.prog = &progress{w: c.stderr}
	}
	return c.prog
}

// torProgress reports a Tor circuit being built once it takes longer than
// progressAfter, then every progressEvery, and how long it took.
func (c *cli) torProgress() func(tor.Progress) {
	p := c.progressOut()
	var mu sync.Mutex
	last := map[string]time.Duration{}
	return func(ev tor.Progress) {
		if ev.Elapsed < progressAfter {
			return
		}
		key := string(ev.Stage)
		mu.Lock()
		prev, seen := last[key]
		if ev.Percent < 100 && seen && ev.Elapsed-prev < progressEvery {
			mu.Unlock()
			return
		}
		last[key] = ev.Elapsed
		if ev.Percent >= 100 {
			delete(last, key)
		}
		mu.Unlock()
		if ev.Percent >= 100 {
			p.printf("tor: %s after %s", ev.Summary, ev.Elapsed.Round(100*time.Millisecond))
			return
		}
		p.printf("tor: %s… (%s)", ev.Summary, ev.Elapsed.Round(time.Second))
	}
}
