package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	tclient "github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/server"
)

var witnessAddr = regexp.MustCompile(`msg="witness serving" addr=(\S+)`)

// TestWitnessCommandServes runs `qpc-server witness` for the
// key-transparency log of a server data directory, has it cosign a
// checkpoint signed with that server's log key, and stops it by signal.
func TestWitnessCommandServes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srvDir, wDir := filepath.Join(dir, "server"), filepath.Join(dir, "witness")
	out, err := exec.Command("qpc-server", "kt-vkey", "--data-dir", srvDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	logVKey := strings.SplitN(string(out), "\n", 2)[0]
	keys, err := server.LoadOrCreateKTKeys(srvDir)
	if err != nil {
		t.Fatal(err)
	}

	p := start(t, "witness", "--data-dir", wDir, "--listen", "127.0.0.1:0", "--name", "witness.test/cmd", "--log", logVKey)
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if m := witnessAddr.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no address; stderr:\n%s", p.stderr.String())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}

	root := sha256.Sum256([]byte("a leaf"))
	text := fmt.Sprintf("%s\n1\n%s\n", keys.Signer.Name(), base64.StdEncoding.EncodeToString(root[:]))
	cp, err := note.Sign(&note.Note{Text: text}, keys.Signer)
	if err != nil {
		t.Fatal(err)
	}
	body := (&witness.Request{OldSize: 0, Checkpoint: cp}).Marshal()
	resp, err := http.Post("http://"+addr+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	cosigs, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add-checkpoint: %d %s", resp.StatusCode, cosigs)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}

	// The cosignature verifies with the keys witness vkey prints.
	out, err = exec.Command("qpc-server", "witness", "vkey", "--data-dir", wDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, vk := range strings.Fields(string(out)) {
		v, err := witness.NewCosignatureVerifier(vk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(append(cp, cosigs...), note.VerifierList(v)); err != nil {
			t.Fatalf("cosignature by %s: %v", vk[:30], err)
		}
	}
}

var ktAddr = regexp.MustCompile(`msg="key-transparency log \(read-only tlog-tiles\)" addr=(\S+)`)

// waitMatch waits until re matches p's stderr and returns its first
// group.
func (p *proc) waitMatch(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("qpc-server exited (%v); stderr:\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stderr never matched %s:\n%s", re, p.stderr.String())
		}
	}
}

// addCheckpoint posts an add-checkpoint request and returns the status
// and body.
func addCheckpoint(t *testing.T, addr string, req *witness.Request) (int, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/add-checkpoint", "text/plain", bytes.NewReader(req.Marshal()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestWitnessAuditCommand runs a real qpc-server, whose key-transparency
// log grows an epoch every 200 ms on its kt_listen, and `qpc-server
// witness --audit` for that log next to a witness without: the auditing
// witness cosigns the server's honest checkpoints, each after replaying
// every epoch from the log over HTTP, and refuses a checkpoint the log's
// key signed for a tree the published log does not hold, which the
// witness without an auditor cosigns. `witness vkey` with the same flags
// announces the audit.
func TestWitnessAuditCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	srvDir := filepath.Join(dir, "server")
	srv := start(t, "run", "--data-dir", srvDir, "--listen", "127.0.0.1:0", "--kt-epoch", "200ms")
	base := "http://" + srv.waitMatch(t, ktAddr) + "/kt"
	out, err := exec.Command("qpc-server", "kt-vkey", "--data-dir", srvDir, "--kt-epoch", "200ms").Output()
	if err != nil {
		t.Fatal(err)
	}
	logVKey := strings.SplitN(string(out), "\n", 2)[0]
	keys, err := server.LoadOrCreateKTKeys(srvDir)
	if err != nil {
		t.Fatal(err)
	}

	aDir, pDir := filepath.Join(dir, "auditing"), filepath.Join(dir, "plain")
	auditSpec := keys.Signer.Name() + "=" + base
	// The auditor follows the log only when offered a checkpoint here
	// (--audit-every 0), so each refusal and cosignature below is the
	// offered checkpoint's audit.
	aw := start(t, "witness", "--data-dir", aDir, "--listen", "127.0.0.1:0", "--name", "witness.test/auditing", "--log", logVKey, "--audit", auditSpec, "--audit-every", "0")
	pw := start(t, "witness", "--data-dir", pDir, "--listen", "127.0.0.1:0", "--name", "witness.test/plain", "--log", logVKey)
	aAddr, pAddr := aw.waitMatch(t, witnessAddr), pw.waitMatch(t, witnessAddr)
	if !strings.Contains(aw.stderr.String(), "audits="+keys.Signer.Name()) {
		t.Fatalf("the auditing witness does not say it audits %s:\n%s", keys.Signer.Name(), aw.stderr.String())
	}
	fetcher, err := tclient.NewHTTPFetcher(must(url.Parse(base+"/")), nil)
	if err != nil {
		t.Fatal(err)
	}
	// checkpoint waits for the log to pass size min and returns its
	// checkpoint.
	checkpoint := func(min uint64) ([]byte, *kt.Checkpoint) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			raw, err := fetcher.ReadCheckpoint(ctx)
			if err == nil {
				cp, err := kt.OpenCheckpoint(raw, keys.Verifier)
				if err != nil {
					t.Fatal(err)
				}
				if cp.Size > min {
					return raw, cp
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the log did not grow past %d: %v", min, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A checkpoint the log's key signed for a one-epoch tree the log
	// never published: consistent with nothing cosigned yet, so only an
	// auditor can tell.
	checkpoint(2)
	root := sha256.Sum256([]byte("an epoch that is not in the log"))
	forged, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n1\n%s\n", keys.Signer.Name(), base64.StdEncoding.EncodeToString(root[:]))}, keys.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := addCheckpoint(t, pAddr, &witness.Request{Checkpoint: forged}); code != http.StatusOK {
		t.Fatalf("the witness without an auditor: %d %s", code, body)
	}
	code, body := addCheckpoint(t, aAddr, &witness.Request{Checkpoint: forged})
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), string(audit.CheckInclusion)) {
		t.Fatalf("the auditing witness answered the forged checkpoint %d %s; want 422 naming the %q check", code, body, audit.CheckInclusion)
	}
	aw.waitStderr(t, "the log's history does not follow")
	t.Logf("refused: %s", body)

	// The honest checkpoints: the first from size 0, the next with the
	// log's consistency proof; each cosignature verifies with the keys
	// witness vkey prints.
	var vs []note.Verifier
	for _, vk := range strings.Fields(string(must(exec.Command("qpc-server", "witness", "vkey", "--data-dir", aDir).Output()))) {
		vs = append(vs, must(witness.NewCosignatureVerifier(vk)))
	}
	var old uint64
	for range 2 {
		raw, cp := checkpoint(old + 2)
		req := &witness.Request{OldSize: old, Checkpoint: raw}
		if old > 0 {
			pb, err := tclient.NewProofBuilder(ctx, cp.Size, fetcher.ReadTile)
			if err != nil {
				t.Fatal(err)
			}
			if req.Proof, err = pb.ConsistencyProof(ctx, old, cp.Size); err != nil {
				t.Fatal(err)
			}
		}
		code, cosigs := addCheckpoint(t, aAddr, req)
		if code != http.StatusOK {
			t.Fatalf("the auditing witness refused the honest checkpoint of size %d: %d %s\n%s", cp.Size, code, cosigs, aw.stderr.String())
		}
		n, err := note.Open(append(raw, cosigs...), note.VerifierList(vs...))
		if err != nil || len(n.Sigs) != 2 {
			t.Fatalf("cosignatures on size %d: %v (%d)", cp.Size, err, len(n.Sigs))
		}
		old = cp.Size
	}
	aw.signal(t, syscall.SIGTERM)
	if code := aw.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, aw.stderr.String())
	}
	// The auditor kept its place beside the witness's state; restarted,
	// it follows the log's published checkpoint on its own from there.
	if _, err := os.Stat(filepath.Join(aDir, auditDBName(keys.Signer.Name()))); err != nil {
		t.Fatal(err)
	}
	aw = start(t, "witness", "--data-dir", aDir, "--listen", "127.0.0.1:0", "--log", logVKey, "--audit", auditSpec)
	audited, err := strconv.ParseUint(aw.waitMatch(t, regexp.MustCompile(`msg="audit: caught up with the log's published checkpoint" origin=\S+ audited=(\d+)`)), 10, 64)
	if err != nil || audited < old {
		t.Fatalf("the restarted auditor followed the log to %d epochs (%v); it had audited %d", audited, err, old)
	}
	aw.signal(t, syscall.SIGTERM)
	if code := aw.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, aw.stderr.String())
	}
	out, err = exec.Command("qpc-server", "witness", "vkey", "--data-dir", aDir, "--log", logVKey, "--audit", auditSpec).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\n# audits %s %s\n", keys.Signer.Name(), base); !strings.Contains(string(out), want) {
		t.Fatalf("witness vkey with --audit printed\n%s\nwant the line %q", out, want[1:])
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestWitnessAuditPolicy runs the two binaries together: `qpc-server
// witness --audit`, auditing the log from the server's kt_listen, and a
// qpc-server whose kt_witness_policy requires that witness (publish
// late). The server starts, which it can only if its first checkpoint is
// cosigned, and so only if kt_listen serves the epoch's update list to the
// witness's auditor before that checkpoint exists; and every checkpoint
// it publishes carries the auditing witness's cosignature.
func TestWitnessAuditPolicy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srvDir, wDir := filepath.Join(dir, "server"), filepath.Join(dir, "witness")
	out, err := exec.Command("qpc-server", "kt-vkey", "--data-dir", srvDir, "--kt-epoch", "200ms").Output()
	if err != nil {
		t.Fatal(err)
	}
	logVKey := strings.SplitN(string(out), "\n", 2)[0]
	keys, err := server.LoadOrCreateKTKeys(srvDir)
	if err != nil {
		t.Fatal(err)
	}
	// The witness's way to the server's kt_listen, whose port is known
	// only once the server runs.
	var target atomic.Pointer[url.URL]
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			if u := target.Load(); u != nil {
				r.SetURL(u)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	})
	t.Cleanup(proxy.Close)

	w := start(t, "witness", "--data-dir", wDir, "--listen", "127.0.0.1:0", "--name", "witness.test/auditing", "--log", logVKey, "--audit", keys.Signer.Name()+"="+proxy.URL+"/kt")
	wAddr := w.waitMatch(t, witnessAddr)
	vk := strings.SplitN(string(must(exec.Command("qpc-server", "witness", "vkey", "--data-dir", wDir).Output())), "\n", 2)[0]
	policy := filepath.Join(dir, "policy")
	if err := os.WriteFile(policy, fmt.Appendf(nil, "witness w %s http://%s\nquorum w\n", vk, wAddr), 0o600); err != nil {
		t.Fatal(err)
	}

	srv := start(t, "run", "--data-dir", srvDir, "--listen", "127.0.0.1:0", "--kt-epoch", "200ms", "--kt-witness-policy", policy)
	ktBase := "http://" + srv.waitMatch(t, ktAddr)
	target.Store(must(url.Parse(ktBase)))
	srv.address(t) // up: its first checkpoint was cosigned

	v := must(witness.NewCosignatureVerifier(vk))
	var last uint64
	for range 2 {
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Get(ktBase + "/kt/checkpoint")
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cp, err := kt.OpenCheckpoint(raw, keys.Verifier)
			if err != nil {
				t.Fatalf("the server's checkpoint: %v\n%s", err, raw)
			}
			if _, err := note.Open(raw, note.VerifierList(v)); err != nil {
				t.Fatalf("the checkpoint of size %d the server published lacks the auditing witness's cosignature: %v", cp.Size, err)
			}
			if cp.Size > last {
				last = cp.Size
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server published nothing past size %d; witness stderr:\n%s", last, w.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if s := w.stderr.String(); strings.Contains(s, "level=ERROR") {
		t.Fatalf("the auditor refused the server's honest log:\n%s", s)
	}
}

// TestWitnessAuditBusy: while the auditor is busy (a long catch-up), an
// offered checkpoint waits only as long as the log's request lasts, then
// is refused; the log's requests do not pile up behind the audit.
func TestWitnessAuditBusy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys, err := server.LoadOrCreateKTKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	wl, err := witness.LogFromVKey(keys.VKey)
	if err != nil {
		t.Fatal(err)
	}
	la, err := openLogAuditor(dir, auditedLog{origin: wl.Origin, url: "http://127.0.0.1:1/kt", log: wl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer la.a.Close()
	la.busy <- struct{}{} // an audit under way
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = la.check(slog.New(slog.DiscardHandler))(ctx, witness.Tree{}, witness.Tree{Size: 1}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 5*time.Second {
		t.Fatalf("check while the auditor is busy: %v after %v; want the request's deadline", err, time.Since(began))
	}
}
