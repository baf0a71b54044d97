package main

import (
	"context"
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

// logArg is one --log of `qpc-server witness` and the --audit URL that
// applies to it, if any.
type logArg struct {
	vkey, audit string
}

// logList collects --log and --audit in command-line order: an --audit
// applies to the --log just before it. With a single --log, an --audit
// given before it applies to it too (resolve).
type logList struct {
	args    []logArg
	pending []string // --audit URLs given before any --log
}

type logFlag struct{ l *logList }

func (f logFlag) String() string {
	if f.l == nil {
		return ""
	}
	var s []string
	for _, a := range f.l.args {
		s = append(s, a.vkey)
	}
	return strings.Join(s, ",")
}

func (f logFlag) Set(s string) error {
	f.l.args = append(f.l.args, logArg{vkey: s})
	return nil
}

type auditFlag struct{ l *logList }

func (f auditFlag) String() string { return "" }

func (f auditFlag) Set(s string) error {
	if err := checkAuditURL(s); err != nil {
		return err
	}
	l := f.l
	if len(l.args) == 0 {
		l.pending = append(l.pending, s)
		return nil
	}
	last := &l.args[len(l.args)-1]
	if last.audit != "" {
		name, _, _ := strings.Cut(last.vkey, "+")
		return fmt.Errorf("two URLs for the log %s: give each --audit after its --log", name)
	}
	last.audit = s
	return nil
}

// checkAuditURL accepts the base URL of a log's public HTTP resources.
func checkAuditURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a log's base URL (http[s]://host[:port][/prefix], such as http://<kt_listen>/kt)", s)
	}
	return nil
}

// resolve applies an --audit given before the only --log to it.
func (l *logList) resolve() error {
	switch {
	case len(l.pending) == 0:
		return nil
	case len(l.pending) == 1 && len(l.args) == 1 && l.args[0].audit == "":
		l.args[0].audit, l.pending = l.pending[0], nil
		return nil
	default:
		return errors.New("--audit URL applies to the --log before it: with several logs, give each --audit after its --log")
	}
}

// auditedLog is a log that is to be audited.
type auditedLog struct {
	origin   string
	audit    string // base URL
	verifier witness.Log
}

// audited returns the logs given with --audit, refusing an audited
// origin that more than one --log names: the auditor checks the log's
// signature with one key.
func (l *logList) audited() ([]auditedLog, error) {
	var out []auditedLog
	count := map[string]int{}
	for _, a := range l.args {
		wl, err := witness.LogFromVKey(a.vkey)
		if err != nil {
			return nil, err
		}
		count[wl.Origin]++
		if a.audit != "" {
			out = append(out, auditedLog{origin: wl.Origin, audit: a.audit, verifier: wl})
		}
	}
	for _, a := range out {
		if count[a.origin] > 1 {
			return nil, fmt.Errorf("log %s is audited but named by %d --log keys: an audited log has one key", a.origin, count[a.origin])
		}
	}
	return out, nil
}

// auditDBName is the auditor database of the log with this origin, in
// the witness's data directory. The origin is path-escaped, so the name
// is one file name and gives the origin back.
func auditDBName(origin string) string {
	return "audit-" + url.PathEscape(origin) + ".db"
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
func (c *cli) witnessLogs(f *witnessFlags, log *slog.Logger) ([]witness.Log, auditors, error) {
	audited, err := f.logs.audited()
	if err != nil {
		return nil, nil, err
	}
	byOrigin := map[string]auditedLog{}
	for _, a := range audited {
		byOrigin[a.origin] = a
	}
	var logs []witness.Log
	var as auditors
	client := &http.Client{Timeout: auditRequestTimeout}
	for _, arg := range f.logs.args {
		l, err := witness.LogFromVKey(arg.vkey)
		if err != nil {
			as.close()
			return nil, nil, err
		}
		if a, ok := byOrigin[l.Origin]; ok {
			la, err := openLogAuditor(f.dataDir, a, client)
			if err != nil {
				as.close()
				return nil, nil, err
			}
			as = append(as, la)
			l.Check = la.check(log)
		}
		logs = append(logs, l)
	}
	return logs, as, nil
}

func openLogAuditor(dir string, a auditedLog, client *http.Client) (*logAuditor, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, auditDBName(a.origin))
	au, err := audit.Open(path, audit.Options{Log: audit.HTTPLog(a.audit, client), Verifier: a.verifier.Verifier})
	if err != nil {
		return nil, fmt.Errorf("auditor of %s: %w", a.origin, err)
	}
	return &logAuditor{origin: a.origin, url: a.audit, a: au, busy: make(chan struct{}, 1)}, nil
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
