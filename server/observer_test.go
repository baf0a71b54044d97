package server

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/store"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestObserverWarns: a server with the observer record on says so in its
// log at startup and again every warnEvery, and writes the record's header.
func TestObserverWarns(t *testing.T) {
	dir := t.TempDir()
	if _, err := CreateIdentity(dir); err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var rec, logs lockedBuffer
	obs, err := NewObserver(&rec)
	if err != nil {
		t.Fatal(err)
	}
	obs.warnEvery = 20 * time.Millisecond
	srv, err := New(Options{Identity: id, Store: st, Observer: obs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "observer record is ON") {
		t.Fatalf("no warning at startup:\n%s", logs.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), "observer record is ON") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the warning is not repeated:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rec.String(), `{"v":1,"schema":"qpc-observer","start":"`) {
		t.Fatalf("record header: %q", rec.String())
	}
}
