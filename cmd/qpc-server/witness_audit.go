package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/witness"
)

// auditedLog is a log given with --audit ORIGIN=URL.
type auditedLog struct {
	origin string
	url    string // the log's public base
	log    witness.Log
}

// audited parses the --audit ORIGIN=URL flags: each names the origin of
// exactly one --log (the auditor checks the log's signature with one
// key), once, and the log's public base URL.
func (f *witnessFlags) audited() ([]auditedLog, error) {
	byOrigin := map[string][]witness.Log{}
	for _, vk := range f.logs {
		l, err := witness.LogFromVKey(vk)
		if err != nil {
			return nil, err
		}
		byOrigin[l.Origin] = append(byOrigin[l.Origin], l)
	}
	var out []auditedLog
	seen := map[string]bool{}
	for _, spec := range f.audits {
		origin, base, ok := strings.Cut(spec, "=")
		if !ok || origin == "" || checkAuditURL(base) != nil {
			return nil, fmt.Errorf("--audit %q: want ORIGIN=URL, URL the log's base (http[s]://host[:port][/prefix], its kt_listen and kt_prefix, e.g. http://log.example:4480/kt)", spec)
		}
		switch ls := byOrigin[origin]; {
		case len(ls) == 0 || seen[origin]:
			return nil, fmt.Errorf("--audit %q: the origin must be one --log's, once", spec)
		case len(ls) > 1:
			return nil, fmt.Errorf("--audit %q: %d --log keys have this origin; an audited log has one key", spec, len(ls))
		default:
			seen[origin] = true
			out = append(out, auditedLog{origin: origin, url: base, log: ls[0]})
		}
	}
	return out, nil
}

// checkAuditURL accepts the base URL of a log's public HTTP resources.
func checkAuditURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a log's base URL", s)
	}
	return nil
}

// auditDBName is the auditor database of the log with this origin, in
// the witness's data directory.
func auditDBName(origin string) string {
	sum := sha256.Sum256([]byte(origin))
	return fmt.Sprintf("audit-%x.db", sum[:8])
}

// auditRequestTimeout bounds one read of a log resource by an auditor.
const auditRequestTimeout = time.Minute

// auditors are the witness's auditors, one per audited log.
type auditors []*logAuditor

type logAuditor struct {
	origin, url string
	a           *audit.Auditor
	// busy is held by the audit under way: an offered checkpoint waits
	// for it only as long as the log's request lasts, so a long catch-up
	// never piles up the log's requests.
	busy chan struct{}

	mu      sync.Mutex
	refused uint64 // the epoch last refused, +1 (0: none)
}

// witnessLogs makes the witness's logs from the flags, opening an
// auditor for each audited log and setting its Check to the auditor's
// CheckTree, so that the witness cosigns only audited checkpoints.
func witnessLogs(f *witnessFlags, log *slog.Logger) ([]witness.Log, auditors, error) {
	audited, err := f.audited()
	if err != nil {
		return nil, nil, err
	}
	var logs []witness.Log
	for _, vk := range f.logs {
		l, err := witness.LogFromVKey(vk)
		if err != nil {
			return nil, nil, err
		}
		logs = append(logs, l)
	}
	var as auditors
	client := &http.Client{Timeout: auditRequestTimeout}
	for _, a := range audited {
		la, err := openLogAuditor(f.dataDir, a, client)
		if err != nil {
			as.close()
			return nil, nil, err
		}
		as = append(as, la)
		for i := range logs {
			if logs[i].Origin == a.origin {
				logs[i].Check = la.check(log)
			}
		}
	}
	return logs, as, nil
}

func openLogAuditor(dir string, a auditedLog, client *http.Client) (*logAuditor, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, auditDBName(a.origin))
	au, err := audit.Open(path, audit.Options{Log: audit.HTTPLog(a.url, client), Verifier: a.log.Verifier})
	if err != nil {
		return nil, fmt.Errorf("--audit %s: %w", a.origin, err)
	}
	return &logAuditor{origin: a.origin, url: a.url, a: au, busy: make(chan struct{}, 1)}, nil
}

// check is the witness's Log.Check for the log: the offered checkpoint
// is cosigned only if the auditor accepts every epoch it covers. A
// refusal the log is to blame for is logged as an error once per epoch.
func (la *logAuditor) check(log *slog.Logger) func(context.Context, witness.Tree, witness.Tree, []byte) error {
	return func(ctx context.Context, _, nt witness.Tree, cp []byte) error {
		if err := la.acquire(ctx); err != nil {
			return fmt.Errorf("audit: still auditing the log (at %d epochs): %w", la.a.Size(), err)
		}
		defer la.release()
		err := la.a.CheckTree(ctx, nt.Size, nt.Root, cp)
		la.report(log, "offered checkpoint", nt.Size, err)
		return err
	}
}

func (la *logAuditor) acquire(ctx context.Context) error {
	select {
	case la.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (la *logAuditor) release() { <-la.busy }

// report logs an audit's outcome: an epoch the log got wrong as an error
// (once per epoch), anything else (the log unreachable) as a warning.
func (la *logAuditor) report(log *slog.Logger, what string, size uint64, err error) {
	if err == nil {
		return
	}
	var refusal *audit.Error
	if !errors.As(err, &refusal) {
		log.Warn("audit: could not audit the log; not cosigning until it can", "origin", la.origin, "what", what, "size", size, "audited", la.a.Size(), "err", err)
		return
	}
	la.mu.Lock()
	first := la.refused != refusal.Epoch+1
	la.refused = refusal.Epoch + 1
	la.mu.Unlock()
	if first {
		log.Error("audit: the log's history does not follow; no checkpoint covering this epoch is cosigned", "origin", la.origin, "url", la.url, "epoch", refusal.Epoch, "check", string(refusal.Check), "err", refusal.Err)
	}
}

func (as auditors) origins() []string {
	out := make([]string, len(as))
	for i, la := range as {
		out[i] = la.origin
	}
	return out
}

// follow has each auditor follow its log's published checkpoint at once
// and then every interval (0: never), so that an auditor catches up on a
// long history outside the log's add-checkpoint requests and a refused
// epoch is reported even if the log never offers it. stop waits for
// the audits under way to end.
func (as auditors) follow(every time.Duration, log *slog.Logger) (stop func()) {
	if every <= 0 || len(as) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, la := range as {
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			caughtUp := false
			for {
				if la.acquire(ctx) != nil {
					return
				}
				cp, err := la.a.Follow(ctx)
				la.release()
				if ctx.Err() != nil {
					return
				}
				size := uint64(0)
				if cp != nil {
					size = cp.Size
				}
				la.report(log, "published checkpoint", size, err)
				if err == nil {
					level := slog.LevelDebug
					if !caughtUp {
						level, caughtUp = slog.LevelInfo, true
					}
					log.Log(ctx, level, "audit: caught up with the log's published checkpoint", "origin", la.origin, "audited", la.a.Size())
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

func (as auditors) close() {
	for _, la := range as {
		la.a.Close()
	}
}
