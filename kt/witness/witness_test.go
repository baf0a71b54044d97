package witness_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
	"github.com/quicprochat/qpc/kt/witness"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ktLog is a real key-transparency directory: its epoch log is the log
// being witnessed.
type ktLog struct {
	*kt.Directory
	keys kttest.Keys
}

func newKTLog(t testing.TB, origin string) *ktLog {
	t.Helper()
	l := &ktLog{keys: kttest.NewKeys(t, origin)}
	l.Directory = kttest.OpenDirectory(t, t.TempDir(), l.keys)
	return l
}

// fork copies the directory and opens the copy with the same keys: from
// here on the two logs may show different histories.
func (l *ktLog) fork(t testing.TB) *ktLog {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fork")
	if err := l.Backup(dir); err != nil {
		t.Fatal(err)
	}
	f := *l
	f.Directory = kttest.OpenDirectory(t, dir, l.keys)
	return &f
}

// tick builds one epoch (one more log entry) and returns its checkpoint.
func (l *ktLog) tick(t testing.TB) *kt.Checkpoint {
	t.Helper()
	if _, err := l.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// request is the add-checkpoint body for the served checkpoint with a
// consistency proof from old, built from the log's tiles.
func (l *ktLog) request(t testing.TB, old uint64) []byte {
	t.Helper()
	p, err := l.Consistency(context.Background(), old)
	if err != nil {
		t.Fatal(err)
	}
	return (&witness.Request{OldSize: p.Old, Proof: p.Hashes, Checkpoint: p.Checkpoint}).Marshal()
}

type testWitness struct {
	*witness.Witness
	dir  string
	srv  *httptest.Server
	logs []witness.Log
}

func openWitness(t testing.TB, dir string, logs ...witness.Log) *testWitness {
	t.Helper()
	w, err := witness.Open(witness.Options{Dir: dir, Name: "witness.test/w1", Logs: logs, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWitness{Witness: w, dir: dir, logs: logs}
	tw.srv = httptest.NewServer(w)
	t.Cleanup(func() { tw.srv.Close(); w.Close() })
	return tw
}

func newWitness(t testing.TB, logs ...*ktLog) *testWitness {
	t.Helper()
	var ls []witness.Log
	for _, l := range logs {
		ls = append(ls, witness.Log{Origin: l.Config().Origin, Verifier: l.keys.Verifier})
	}
	return openWitness(t, t.TempDir(), ls...)
}

// post sends an add-checkpoint request over HTTP.
func (w *testWitness) post(t testing.TB, body []byte) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(w.srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// mustCosign posts the request, expects 200 and checks both cosignatures
// on the checkpoint.
func (w *testWitness) mustCosign(t testing.TB, l *ktLog, body []byte) []byte {
	t.Helper()
	code, _, out := w.post(t, body)
	if code != http.StatusOK {
		t.Fatalf("add-checkpoint: %d %s", code, out)
	}
	req, err := witness.ParseRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	w.checkCosigned(t, l, req.Checkpoint, out)
	return out
}

func (w *testWitness) checkCosigned(t testing.TB, l *ktLog, checkpoint, cosigs []byte) {
	t.Helper()
	if !bytes.HasPrefix(cosigs, []byte("— ")) || !bytes.HasSuffix(cosigs, []byte("\n")) || bytes.Count(cosigs, []byte("\n")) != 2 {
		t.Fatalf("response is not two signature lines: %q", cosigs)
	}
	for _, vk := range []string{w.VerifierKey(), w.MLDSAVerifierKey()} {
		v, err := witness.NewCosignatureVerifier(vk)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(append(bytes.Clone(checkpoint), cosigs...), note.VerifierList(v, l.keys.Verifier))
		if err != nil {
			t.Fatalf("cosigned checkpoint does not verify with %s: %v", vk[:20], err)
		}
		if len(n.Sigs) != 2 {
			t.Fatalf("%d verified signatures, want the log's and the witness's", len(n.Sigs))
		}
	}
}

func (w *testWitness) latest(t testing.TB, origin string) witness.Tree {
	t.Helper()
	tr, _, err := w.Latest(origin)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestWitnessAddCheckpointGrowth(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin

	// First contact: old size 0, empty proof.
	cp := l.tick(t)
	w.mustCosign(t, l, l.request(t, 0))
	if got := w.latest(t, origin); got.Size != cp.Size || got.Root != cp.Root {
		t.Fatalf("recorded %d, want %d", got.Size, cp.Size)
	}
	// Growth over several epochs, one and two at a time, with proofs from
	// the log's tiles.
	for i, step := range []int{1, 1, 2, 1, 3} {
		old := cp.Size
		for range step {
			cp = l.tick(t)
		}
		w.mustCosign(t, l, l.request(t, old))
		if got := w.latest(t, origin); got.Size != cp.Size || got.Root != cp.Root {
			t.Fatalf("step %d: recorded size %d, want %d", i, got.Size, cp.Size)
		}
	}
	// The same checkpoint again: cosigned again (same tree), state unchanged.
	w.mustCosign(t, l, l.request(t, cp.Size))
	_, stored, err := w.Latest(origin)
	if err != nil || !bytes.Equal(stored, cp.Raw) {
		t.Fatalf("stored checkpoint %q, %v", stored, err)
	}
}

func TestWitnessAddCheckpointSeveralLogs(t *testing.T) {
	a, b := newKTLog(t, "witness.test/a"), newKTLog(t, "witness.test/b")
	w := newWitness(t, a, b)
	a.tick(t)
	w.mustCosign(t, a, a.request(t, 0))
	cpb := b.tick(t)
	b.tick(t)
	w.mustCosign(t, b, b.request(t, 0))
	if got := w.latest(t, "witness.test/a"); got.Size != 2 {
		t.Fatalf("log a at %d, want 2", got.Size)
	}
	if got := w.latest(t, "witness.test/b"); got.Size != cpb.Size+1 {
		t.Fatalf("log b at %d, want %d", got.Size, cpb.Size+1)
	}
}

// expect409 checks the tlog-witness 409 answer: the recorded size in a
// text/x.tlog.size body.
func expect409(t testing.TB, code int, h http.Header, body []byte, recorded uint64) {
	t.Helper()
	if code != http.StatusConflict {
		t.Fatalf("status %d (%s), want 409", code, body)
	}
	if ct := h.Get("Content-Type"); ct != "text/x.tlog.size" {
		t.Fatalf("Content-Type %q", ct)
	}
	if want := []byte(itoa(recorded) + "\n"); !bytes.Equal(body, want) {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func itoa(n uint64) string { return strings.TrimSpace(string(appendUint(nil, n))) }

func appendUint(b []byte, n uint64) []byte {
	if n >= 10 {
		b = appendUint(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// TestWitnessRollbackRefused plays a log that, having had size N
// cosigned, asks for a cosignature of an older (smaller) checkpoint.
func TestWitnessRollbackRefused(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin
	l.tick(t)
	oldBody := l.request(t, 0) // size 2, saved for replay
	w.mustCosign(t, l, oldBody)
	l.tick(t)
	cp := l.tick(t)
	w.mustCosign(t, l, l.request(t, 2))
	recorded := w.latest(t, origin)

	// The older checkpoint claiming to start from scratch: 409 with the
	// recorded size.
	code, h, body := w.post(t, oldBody)
	expect409(t, code, h, body, cp.Size)
	// The older checkpoint claiming the recorded size as old: old above
	// the checkpoint's size is malformed (400).
	req, _ := witness.ParseRequest(oldBody)
	req.OldSize = cp.Size
	if code, _, body := w.post(t, req.Marshal()); code != http.StatusBadRequest {
		t.Fatalf("rollback with old = recorded: %d %s, want 400", code, body)
	}
	// A stale old size on a newer checkpoint: 409.
	l.tick(t)
	code, h, body = w.post(t, l.request(t, 2))
	expect409(t, code, h, body, cp.Size)
	if got := w.latest(t, origin); got != recorded {
		t.Fatalf("state moved to %d after refusals", got.Size)
	}
	// After a 409 the log retries with the size it was told.
	w.mustCosign(t, l, l.request(t, cp.Size))
}

// TestWitnessSplitView plays a log that shows two histories: the witness
// cosigns one and refuses every checkpoint of the other.
func TestWitnessSplitView(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin
	base := l.tick(t)
	w.mustCosign(t, l, l.request(t, 0))
	f := l.fork(t)

	a := l.tick(t)
	b := f.tick(t)
	if a.Size != b.Size || a.Root == b.Root {
		t.Fatalf("fork did not diverge: %d/%d", a.Size, b.Size)
	}
	w.mustCosign(t, l, l.request(t, base.Size))

	// The other history at the same size, claimed from the old size: 409.
	code, h, body := w.post(t, f.request(t, base.Size))
	expect409(t, code, h, body, a.Size)
	// ... and claimed from the recorded size (equal sizes, other root): 409.
	code, h, body = w.post(t, f.request(t, b.Size))
	expect409(t, code, h, body, a.Size)
	// The other history grown past it, with its own consistency proof
	// from the recorded size: the proof cannot reach the cosigned root.
	f.tick(t)
	if code, _, body := w.post(t, f.request(t, a.Size)); code != http.StatusUnprocessableEntity {
		t.Fatalf("fork's growth: %d %s, want 422", code, body)
	}
	if got := w.latest(t, origin); got.Size != a.Size || got.Root != a.Root {
		t.Fatalf("state moved to the fork")
	}
	// Kept as evidence: the fork's checkpoint at the cosigned size, which
	// with the recorded one convicts the log.
	ev, err := w.Evidence(origin)
	if err != nil || len(ev) != 1 || !bytes.Equal(ev[0], b.Raw) {
		t.Fatalf("%d pieces of evidence kept (%v), want the fork's checkpoint", len(ev), err)
	}
	// The true history goes on being cosigned.
	l.tick(t)
	w.mustCosign(t, l, l.request(t, a.Size))
}

func TestWitnessBadSignature(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin
	cp := l.tick(t)

	// Signed by another key under the log's name: an unknown key, ignored,
	// so no trusted signature.
	other := newKTLog(t, origin)
	n, err := note.Open(cp.Raw, note.VerifierList(l.keys.Verifier))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := note.Sign(&note.Note{Text: n.Text}, other.keys.Signer)
	if err != nil {
		t.Fatal(err)
	}
	// The log's signature with one bit flipped: a known key whose
	// signature fails.
	// The flip is made in the decoded signature, so that the line still
	// parses (a flipped base64 character may not be base64 at all).
	sp := bytes.LastIndexByte(cp.Raw, ' ') + 1
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(cp.Raw[sp:])))
	if err != nil {
		t.Fatal(err)
	}
	sig[10] ^= 1 // past the 4-byte key hash: the signature itself
	tampered := append(bytes.Clone(cp.Raw[:sp]), base64.StdEncoding.EncodeToString(sig)+"\n"...)
	for name, c := range map[string][]byte{"other key": forged, "bad signature": tampered} {
		body := (&witness.Request{OldSize: 0, Checkpoint: c}).Marshal()
		if code, _, out := w.post(t, body); code != http.StatusForbidden {
			t.Errorf("%s: %d %s, want 403", name, code, out)
		}
	}
	if got := w.latest(t, origin); got.Size != 0 {
		t.Fatalf("state moved to %d", got.Size)
	}
}

func TestWitnessUnknownLog(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	stranger := newKTLog(t, "witness.test/stranger")
	w := newWitness(t, l)
	stranger.tick(t)
	code, _, out := w.post(t, stranger.request(t, 0))
	if code != http.StatusNotFound {
		t.Fatalf("unknown log: %d %s, want 404", code, out)
	}
}

func TestWitnessBadProof(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin
	for range 3 {
		l.tick(t)
	}
	w.mustCosign(t, l, l.request(t, 0))
	old := w.latest(t, origin)
	for range 3 {
		l.tick(t)
	}
	good := l.request(t, old.Size)
	req, err := witness.ParseRequest(good)
	if err != nil || len(req.Proof) == 0 {
		t.Fatalf("no proof to break: %v", err)
	}
	cases := map[string]func(r *witness.Request){
		"flipped hash":  func(r *witness.Request) { r.Proof[0][0] ^= 1 },
		"missing hash":  func(r *witness.Request) { r.Proof = r.Proof[1:] },
		"extra hash":    func(r *witness.Request) { r.Proof = append(r.Proof, make([]byte, 32)) },
		"no proof":      func(r *witness.Request) { r.Proof = nil },
		"proof on same": func(r *witness.Request) { r.Checkpoint = mustCheckpointAt(t, w, origin) },
	}
	for name, mutate := range cases {
		r, _ := witness.ParseRequest(good)
		mutate(r)
		if code, _, out := w.post(t, r.Marshal()); code != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s, want 422", name, code, out)
		}
	}
	if got := w.latest(t, origin); got != old {
		t.Fatalf("state moved to %d", got.Size)
	}
	w.mustCosign(t, l, good)
}

func mustCheckpointAt(t testing.TB, w *testWitness, origin string) []byte {
	_, cp, err := w.Latest(origin)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestWitnessMalformed(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	l.tick(t)
	good := l.request(t, 0)
	cp := good[len("old 0\n\n"):]
	cases := map[string][]byte{
		"empty":            nil,
		"no old line":      cp,
		"leading zero":     append([]byte("old 00\n\n"), cp...),
		"negative":         append([]byte("old -1\n\n"), cp...),
		"no blank line":    append([]byte("old 0\n"), cp...),
		"short hash":       append([]byte("old 0\nAAAA\n\n"), cp...),
		"no checkpoint":    []byte("old 0\n\n"),
		"old above size":   append([]byte("old 3\n\n"), cp...),
		"not a checkpoint": []byte("old 0\n\nwitness.test/log\nnot a size\nAAAA\n\n— x AAAA\n"),
	}
	for name, body := range cases {
		if code, _, out := w.post(t, body); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, code, out)
		}
	}
	resp, err := http.Get(w.srv.URL + "/add-checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d, want 405", resp.StatusCode)
	}
	big := append(bytes.Repeat([]byte("x"), witness.MaxRequestBytes), good...)
	if code, _, _ := w.post(t, big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: %d, want 413", code)
	}
}

// TestWitnessStateSurvivesRestart closes the witness and opens it again:
// the key and the recorded size are the same, so nothing cosigned before
// can be undone.
func TestWitnessStateSurvivesRestart(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	dir := t.TempDir()
	logs := []witness.Log{{Origin: l.Config().Origin, Verifier: l.keys.Verifier}}
	w := openWitness(t, dir, logs...)
	old := l.request(t, 0)
	w.mustCosign(t, l, old)
	l.tick(t)
	cp := l.tick(t)
	w.mustCosign(t, l, l.request(t, 1))
	vk, mvk := w.VerifierKey(), w.MLDSAVerifierKey()
	w.srv.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddCheckpoint(context.Background(), old); !errors.Is(err, witness.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}

	w2 := openWitness(t, dir, logs...)
	if w2.VerifierKey() != vk || w2.MLDSAVerifierKey() != mvk {
		t.Fatal("witness key changed across a restart")
	}
	if got := w2.latest(t, l.Config().Origin); got.Size != cp.Size || got.Root != cp.Root {
		t.Fatalf("recorded %d after restart, want %d", got.Size, cp.Size)
	}
	code, h, body := w2.post(t, old)
	expect409(t, code, h, body, cp.Size)
	st, err := os.Stat(filepath.Join(dir, witness.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode().Perm(), err)
	}
	// A different name for the same key is refused.
	if _, err := witness.Open(witness.Options{Dir: dir, Name: "witness.test/other", Logs: logs, Logger: quiet()}); err == nil {
		t.Fatal("opened an existing key under another name")
	}
}

// TestWitnessCheckHook: a Log's Check sees the recorded and offered trees
// and its refusal leaves nothing cosigned.
func TestWitnessCheckHook(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	var mu sync.Mutex
	var seen [][2]witness.Tree
	refuse := false
	check := func(ctx context.Context, old, new witness.Tree, signed []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := note.Open(signed, note.VerifierList(l.keys.Verifier)); err != nil {
			return err
		}
		seen = append(seen, [2]witness.Tree{old, new})
		if refuse {
			return errors.New("epoch does not follow")
		}
		return nil
	}
	w := openWitness(t, t.TempDir(), witness.Log{Origin: l.Config().Origin, Verifier: l.keys.Verifier, Check: check})
	a := l.tick(t)
	w.mustCosign(t, l, l.request(t, 0))
	mu.Lock()
	refuse = true
	mu.Unlock()
	l.tick(t)
	if code, _, out := w.post(t, l.request(t, a.Size)); code != http.StatusUnprocessableEntity {
		t.Fatalf("refused by check: %d %s, want 422", code, out)
	}
	if got := w.latest(t, l.Config().Origin); got.Size != a.Size {
		t.Fatalf("state moved to %d", got.Size)
	}
	if len(seen) != 2 || seen[0][0].Size != 0 || seen[0][1].Size != a.Size || seen[1][0].Size != a.Size || seen[1][1].Size != a.Size+1 {
		t.Fatalf("check saw %v", seen)
	}
}

// TestWitnessConcurrentRace: requests racing from one old size; exactly
// one may win, or the witness could roll the log back (the race in
// c2sp.org/tlog-witness § add-checkpoint).
func TestWitnessConcurrentRace(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	w.mustCosign(t, l, l.request(t, 0))
	var bodies [][]byte
	for range 4 {
		l.tick(t)
		bodies = append(bodies, l.request(t, 1))
	}
	var wg sync.WaitGroup
	codes := make([]int, len(bodies))
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = w.post(t, b)
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codes {
		switch c {
		case http.StatusOK:
			ok++
		case http.StatusConflict:
		default:
			t.Fatalf("status %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of the racing requests were cosigned, want 1 (codes %v)", ok, codes)
	}
}

// TestWitnessStrangerWritesNothing plays a stranger who replays a log's
// public checkpoints with signature lines of its own and wrong proofs:
// nothing it adds is stored, and no refusal grows the database.
func TestWitnessStrangerWritesNothing(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	origin := l.Config().Origin
	l.tick(t)
	// The stranger's lines ride on the first checkpoint cosigned: only the
	// log's signature is kept.
	junk := "— stranger.example/x " + strings.Repeat("A", 4000) + "\n"
	req, _ := witness.ParseRequest(l.request(t, 0))
	req.Checkpoint = append(req.Checkpoint, junk...)
	w.mustCosign(t, l, req.Marshal())
	cp, err := l.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, stored, _ := w.Latest(origin); !bytes.Equal(stored, cp.Raw) {
		t.Fatalf("stored checkpoint is not the log's note alone (%d bytes, want %d)", len(stored), len(cp.Raw))
	}
	l.tick(t)
	l.tick(t)
	good, _ := witness.ParseRequest(l.request(t, cp.Size))
	dbPath := filepath.Join(w.dir, witness.DBFile)
	before, err := os.Stat(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, _ := witness.ParseRequest(good.Marshal())
		r.Proof[0][i%32] ^= byte(1 + i)
		r.Checkpoint = append(r.Checkpoint, bytes.Repeat([]byte(junk), 30)...)
		if code, _, out := w.post(t, r.Marshal()); code != http.StatusUnprocessableEntity {
			t.Fatalf("wrong proof %d: %d %s", i, code, out)
		}
	}
	after, err := os.Stat(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := w.Evidence(origin); len(ev) != 0 || after.Size() != before.Size() {
		t.Fatalf("refusals stored %d pieces of evidence, database %d -> %d bytes", len(ev), before.Size(), after.Size())
	}
}
