package hostile_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/kttest"
	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
	"github.com/transparency-dev/tessera/api/layout"
	tclient "github.com/transparency-dev/tessera/client"
)

// TestHostileAlternatingMapsWitnessed: the alternating-maps attack
// (docs/key-transparency.md §5; kt/audit's TestAuditAlternatingMaps)
// against real clients pinned to a witness policy. Two of our witnesses
// (kt/witness, on loopback) witness the server's log: one audits
// (kt/audit's CheckTree as its log's Check, reading the log the server
// publishes over HTTP, as `qpc-server witness --audit` runs it), one does
// not. The server, having stopped submitting its real log, publishes ONE
// linear, signed log: the real epochs, then an epoch A of a fork holding
// a rogue binding of alice, then an epoch B of another fork without it,
// and has each checkpoint cosigned by whichever witness will. Bob is
// answered at A, alice's owner check at B.
//
// Pinned to the non-auditing witness, the attack works: bob accepts the
// rogue key, alice's history is clean and raises nothing. Pinned to the
// auditing witness: A follows from the real epochs and is cosigned (bob
// still sees the rogue key there, as he would after any rogue insertion),
// but B drops the rogue leaf, so the auditor refuses it and the witness
// does not cosign it; alice's client refuses the checkpoint and raises a
// kt alarm holding it, and answered at A instead (cosigned) her owner
// check finds the rogue version. Either way the owner sees the lie, so
// the test fails if the auditor is taken out of the witness.
func TestHostileAlternatingMapsWitnessed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		auditing bool
	}{{"plain policy", false}, {"auditing policy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startAlternating(t, tc.auditing)
			ctx := ctxT(t)
			c, err := s.bob.AddContact(ctx, "alice")
			if err != nil {
				t.Fatalf("bob's lookup at the A epoch, which every witness cosigned: %v", err)
			}
			if !c.IdentityKey.Equal(s.rogue) {
				t.Fatal("bob was not shown the rogue key: the scenario did not play")
			}
			s.answerAliceAt(s.b)
			alarms, err := s.alice.KTCheck(ctx)
			if !tc.auditing {
				// The attack works without an auditor.
				if err != nil || len(alarms) != 0 || ktAlarm(t, s.alice) != nil {
					t.Fatalf("alice's owner check at the B epoch, cosigned by the plain witness: %v, %d alarms; want a clean history (the attack unseen)", err, len(alarms))
				}
				return
			}
			if !errors.Is(err, kt.ErrCosignature) {
				t.Fatalf("alice's owner check at the B epoch the auditor refused: %v, want ErrCosignature", err)
			}
			a := ktAlarm(t, s.alice)
			if a == nil || !bytes.Equal(a.Evidence[0], s.b.cp) {
				t.Fatalf("no kt alarm holding the uncosigned checkpoint: %+v", a)
			}
			// The server's other choice, alice at the cosigned A epoch,
			// shows her the rogue version.
			s.answerAliceAt(s.a)
			alarms, err = s.alice.KTCheck(ctx)
			if err != nil || len(alarms) != 1 || !strings.Contains(alarms[0].Detail, "version 2") {
				t.Fatalf("alice's owner check at the A epoch: %v, alarms %+v; want one naming version 2", err, alarms)
			}
		})
	}
}

// alternating is the played scenario.
type alternating struct {
	h            *hostile.Server
	alice, bob   *client.Client
	rogue        ed25519.PublicKey
	a, b         servedEpoch // the epochs the forged log holds last
	mapA, mapB   *kt.Directory
	aliceAnswers atomic.Pointer[servedEpoch]
}

// servedEpoch is an epoch of the forged log and its cosigned checkpoint.
type servedEpoch struct {
	d      *kt.Directory // the map it was made from
	record []byte
	cp     []byte // as the forged log published it, with cosignatures
	size   uint64 // the log size it is the last entry of
	log    *kttest.ForgedLog
}

func startAlternating(t *testing.T, pinAuditing bool) *alternating {
	t.Helper()
	ctx := ctxT(t)
	// The log's public HTTP, as the lying server serves it: its real
	// directory, later the forged log.
	var served atomic.Pointer[http.Handler]
	var notYet http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})
	served.Store(&notYet)
	logSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*served.Load()).ServeHTTP(w, r) }))
	t.Cleanup(logSrv.Close)

	var auditing, plain *ourWitness
	var auditor *audit.Auditor
	gate := &submitGate{next: http.DefaultTransport}
	var serverPolicy string
	h := hostile.Start(t, hostile.Options{KT: func(k *server.KTKeys, o *kt.DirectoryOptions) {
		var err error
		auditor, err = audit.Open(filepath.Join(t.TempDir(), "audit.db"), audit.Options{Log: audit.HTTPLog(logSrv.URL+"/kt", nil), Verifier: k.Verifier})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { auditor.Close() })
		auditing = startWitness(t, "witness.test/auditing", witness.Log{Origin: k.Signer.Name(), Verifier: k.Verifier,
			Check: func(ctx context.Context, _, nt witness.Tree, cp []byte) error {
				return auditor.CheckTree(ctx, nt.Size, nt.Root, cp)
			}})
		plain = startWitness(t, "witness.test/plain", witness.Log{Origin: k.Signer.Name(), Verifier: k.Verifier})
		serverPolicy = fmt.Sprintf("witness auditing %s %s\nwitness plain %s %s\ngroup both all auditing plain\nquorum both\n",
			auditing.vkey, auditing.url, plain.vkey, plain.url)
		o.WitnessPolicy = mustPolicy(t, serverPolicy)
		o.WitnessTimeout = 5 * time.Second
		o.WitnessClient = &http.Client{Transport: gate}
		// Fail open: once the server stops submitting its real log below,
		// that log goes on unwitnessed (clients would refuse it) instead
		// of holding every epoch for the witness timeout.
		o.WitnessFailOpen = true
		// The log is served (as qpc-server's kt_listen is) before its
		// first checkpoint is awaited: the auditing witness reads it.
		o.Opened = func(d *kt.Directory) {
			honest := server.KTHandler(d, "/kt")
			served.Store(&honest)
		}
	}})

	// Clients pin one witness, the auditing one or the other.
	pinned := plain
	if pinAuditing {
		pinned = auditing
	}
	policy := mustPolicy(t, fmt.Sprintf("witness w %s\nquorum w\n", pinned.vkey))
	deadline := time.Now().Add(20 * time.Second)
	for cp, _ := h.KT().Checkpoint(); cp == nil || !policy.Satisfied(cp.Raw) || !mustPolicy(t, serverPolicy).Satisfied(cp.Raw); cp, _ = h.KT().Checkpoint() {
		if time.Now().After(deadline) {
			t.Fatal("the witnesses never cosigned the server's log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pin := h.Pin()
	pin.WitnessPolicy = policy.Text()
	newUser := func(handle string) *client.Client {
		c, err := client.Init(ctx, h.Addr(handle), pin, h.ClientOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
			t.Fatalf("register %s: %v", handle, err)
		}
		return c
	}
	s := &alternating{h: h, alice: newUser("alice"), bob: newUser("bob")}
	if _, err := s.alice.KTCheck(ctx); err != nil {
		t.Fatalf("alice's owner check on the real log: %v", err)
	}

	// The server stops submitting its real log to the witnesses and
	// forks its directory twice at the same epoch.
	gate.close()
	s.mapA = h.ForkKT(t)
	s.mapB = copyDirectory(t, h, s.mapA)
	shared, err := s.mapA.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*ourWitness{auditing, plain} {
		if cosigned, _, _ := w.w.Latest(h.KTKeys.Signer.Name()); cosigned.Size > shared.Size {
			t.Fatalf("%s cosigned size %d, beyond the fork's %d", w.name, cosigned.Size, shared.Size)
		}
	}
	rogue := publishRogue(t, s.mapA, "alice") // map A: the rogue v2
	s.rogue = rogue
	if _, err := s.mapB.Tick(ctx); err != nil { // map B: padding only
		t.Fatal(err)
	}

	// The one log everyone is shown: the real epochs, A's, then B's.
	// Its checkpoints are submitted to the server's witnesses and
	// published with whatever cosignatures they give.
	l := kttest.NewForgedLog(t, h.KTKeys.Signer, h.KTKeys.Verifier, kttest.ForgedLogOptions{WitnessPolicy: serverPolicy})
	forged := l.Handler()
	served.Store(&forged)
	n := shared.Size // epochs 0..n-1 are in both maps; A's and B's epoch is n
	for e := range n + 1 {
		l.Append(t, recordEntry(t, s.mapA, e, n+1), updateList(t, s.mapA, e))
	}
	s.a = servedEpoch{d: s.mapA, record: recordEntry(t, s.mapA, n, n+1), cp: l.Checkpoint(t), size: n + 1, log: l}
	recB, err := kt.ParseEpochRecord(recordEntry(t, s.mapB, n, n+1))
	if err != nil {
		t.Fatal(err)
	}
	ulB, err := kt.ParseUpdateList(updateList(t, s.mapB, n))
	if err != nil {
		t.Fatal(err)
	}
	recB.Epoch, ulB.Epoch, recB.Timestamp = n+1, n+1, uint64(time.Now().UnixMilli())
	l.Append(t, recB.Marshal(), ulB.Marshal())
	s.b = servedEpoch{d: s.mapB, record: recB.Marshal(), cp: l.Checkpoint(t), size: n + 2, log: l}

	// What the witnesses made of it (Errorf: the clients' verdicts below
	// are the point).
	both := mustPolicy(t, serverPolicy)
	if got := both.Cosigners(s.a.cp); len(got) != 2 {
		t.Errorf("the A checkpoint is cosigned by %v; want both witnesses (it follows from the real log)", got)
	}
	if got := both.Cosigners(s.b.cp); len(got) != 1 || got[0] != plain.name {
		t.Errorf("the B checkpoint is cosigned by %v; want only %s", got, plain.name)
	}
	if auditor.Size() != n+1 {
		t.Errorf("the auditor is at %d epochs; want %d, refusing B's", auditor.Size(), n+1)
	}
	t.Logf("epochs 0..%d shared, %d with alice's rogue v2, %d without; the auditing witness refused the last: %s", n-1, n, n+1, auditing.lastRefusal())

	// Bob is answered at A; alice as answerAliceAt says.
	h.Rewrite(func(x *hostile.Exchange) {
		var raw []byte
		var err error
		switch q := x.Request.(type) {
		case *wire.KTLookup:
			if x.Tag != "bob" {
				return
			}
			var p *kt.LookupProof
			if p, err = s.a.d.Lookup(context.Background(), q.Label, 0); err == nil {
				if p.Epoch, err = s.a.epochProof(q.KnownSize); err == nil {
					raw = p.Marshal()
				}
			}
		case *wire.KTHistory:
			at := s.aliceAnswers.Load()
			if x.Tag != "alice" || at == nil {
				return
			}
			var p *kt.HistoryProof
			if p, err = at.d.History(context.Background(), q.Label, q.Since, 0); err == nil {
				if p.Epoch, err = at.epochProof(q.KnownSize); err == nil {
					raw = p.Marshal()
				}
			}
		default:
			return
		}
		if err != nil {
			t.Errorf("answering from the forged log: %v", err)
			return
		}
		x.Response = &wire.KTProof{Proof: raw}
	})
	return s
}

// answerAliceAt has alice's owner checks answered at epoch e of the
// forged log.
func (s *alternating) answerAliceAt(e servedEpoch) { s.aliceAnswers.Store(&e) }

// epochProof proves e's record the last entry under its checkpoint, and
// the checkpoint consistent with the size the client knows.
func (e *servedEpoch) epochProof(known uint64) (kt.EpochProof, error) {
	ctx := context.Background()
	pb, err := tclient.NewProofBuilder(ctx, e.size, e.log.ReadTile)
	if err != nil {
		return kt.EpochProof{}, err
	}
	incl, err := pb.InclusionProof(ctx, e.size-1)
	if err != nil {
		return kt.EpochProof{}, err
	}
	p := kt.EpochProof{Record: e.record, Checkpoint: e.cp, Inclusion: incl, KnownSize: known}
	if known > 0 && known < e.size {
		if p.Consistency, err = pb.ConsistencyProof(ctx, known, e.size); err != nil {
			return kt.EpochProof{}, err
		}
	}
	return p, nil
}

// ourWitness is a kt/witness served on loopback.
type ourWitness struct {
	name, vkey, url string
	w               *witness.Witness
	mu              sync.Mutex
	refusal         string
}

func startWitness(t *testing.T, name string, l witness.Log) *ourWitness {
	t.Helper()
	w, err := witness.Open(witness.Options{Dir: t.TempDir(), Name: name, Logs: []witness.Log{l}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ow := &ourWitness{name: name, vkey: w.VerifierKey(), w: w}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		w.ServeHTTP(rec, r)
		if rec.Code == http.StatusUnprocessableEntity {
			ow.mu.Lock()
			ow.refusal = strings.TrimSpace(rec.Body.String())
			ow.mu.Unlock()
		}
		for k, v := range rec.Header() {
			rw.Header()[k] = v
		}
		rw.WriteHeader(rec.Code)
		rw.Write(rec.Body.Bytes())
	}))
	t.Cleanup(func() { srv.Close(); w.Close() })
	ow.url = srv.URL
	return ow
}

func (w *ourWitness) lastRefusal() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refusal
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// submitGate carries the server's requests to its witnesses until
// closed; close waits for those under way.
type submitGate struct {
	next   http.RoundTripper
	mu     sync.RWMutex
	closed bool
}

func (g *submitGate) RoundTrip(r *http.Request) (*http.Response, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, errors.New("the server no longer submits its real log")
	}
	return g.next.RoundTrip(r)
}

func (g *submitGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// copyDirectory opens a copy of d (a fork of h's directory, not
// started).
func copyDirectory(t *testing.T, h *hostile.Server, d *kt.Directory) *kt.Directory {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kt-copy")
	if err := d.Backup(dir); err != nil {
		t.Fatal(err)
	}
	c, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: dir, LogSigner: h.KTKeys.Signer, LogVerifier: h.KTKeys.Verifier, VRFKey: h.KTKeys.VRF,
		EpochInterval: h.KT().Config().EpochInterval, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recordEntry reads epoch e's record from d's log of size (at least)
// size.
func recordEntry(t *testing.T, d *kt.Directory, e, size uint64) []byte {
	t.Helper()
	eb, err := tclient.GetEntryBundle(context.Background(), func(_ context.Context, i uint64, p uint8) ([]byte, error) {
		b, err := d.LogResource(layout.EntriesPath(i, p))
		if p != 0 && errors.Is(err, kt.ErrResource) {
			return d.LogResource(layout.EntriesPath(i, 0))
		}
		return b, err
	}, e/layout.EntryBundleWidth, size)
	if err != nil {
		t.Fatal(err)
	}
	return eb.Entries[e%layout.EntryBundleWidth]
}

func updateList(t *testing.T, d *kt.Directory, e uint64) []byte {
	t.Helper()
	b, err := d.UpdateList(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
