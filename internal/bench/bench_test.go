package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	qtokens "github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

func TestEnvelopeSizeFillsBucket(t *testing.T) {
	for _, size := range padding.Default.Buckets()[1:] {
		env := make([]byte, EnvelopeSize(size))
		rec, err := wire.AppendMessage(nil, padding.Default, &wire.Send{Envelope: env})
		if err != nil {
			t.Fatal(err)
		}
		if len(rec) != size {
			t.Errorf("record for bucket %d is %d bytes", size, len(rec))
		}
		// One byte more must spill into the next bucket: the envelope is
		// the largest that fits, not merely one that fits.
		rec, err = wire.AppendMessage(nil, padding.Default, &wire.Send{Envelope: append(env, 0)})
		if err == nil && len(rec) == size {
			t.Errorf("envelope of %d bytes still fits bucket %d", len(env)+1, size)
		}
	}
	if got := EnvelopeSize(2048); got != 1991 {
		t.Errorf("EnvelopeSize(2048) = %d, want 1991", got)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	env := make([]byte, EnvelopeSize(2048))
	for i := envHeaderSize; i < len(env); i++ {
		env[i] = byte(rand.Uint32())
	}
	stampEnvelope(env, 42, 7, 1234*time.Microsecond)
	seq, sent, err := parseEnvelope(env, 42)
	if err != nil || seq != 7 || sent != 1234*time.Microsecond {
		t.Fatalf("parse = %d, %v, %v", seq, sent, err)
	}
	if _, _, err := parseEnvelope(env, 43); !errors.Is(err, errEnvForeign) {
		t.Errorf("other run: %v", err)
	}
	for _, i := range []int{9, 17, 25, envHeaderSize, len(env) - 1} {
		bad := append([]byte(nil), env...)
		bad[i] ^= 1
		if _, _, err := parseEnvelope(bad, 42); !errors.Is(err, errEnvCRC) {
			t.Errorf("flipped byte %d: %v", i, err)
		}
	}
	bad := append([]byte(nil), env...)
	bad[0] ^= 1
	if _, _, err := parseEnvelope(bad, 42); !errors.Is(err, errEnvMagic) {
		t.Errorf("bad magic: %v", err)
	}
	if _, _, err := parseEnvelope(env[:envHeaderSize-1], 42); !errors.Is(err, errEnvShort) {
		t.Errorf("short: %v", err)
	}
}

func TestTrackerAccounting(t *testing.T) {
	var tr tracker
	for seq := uint64(1); seq <= 5; seq++ {
		tr.ack(seq)
	}
	tr.deliver(1, 3*time.Millisecond)
	tr.deliver(2, 1*time.Millisecond)
	tr.deliver(2, 9*time.Millisecond) // duplicate: no second latency
	tr.deliver(3, 2*time.Millisecond)
	tr.deliver(7, 4*time.Millisecond) // delivered, its send failed
	tr.deliver(8, 5*time.Millisecond) // delivered before its ack arrives
	tr.ack(8)
	tr.ack(8) // an ack is counted once
	tr.badDelivery()
	if n := tr.outstanding(); n != 2 {
		t.Errorf("outstanding = %d, want 2 (4 and 5)", n)
	}
	got := tr.tally()
	want := tally{acked: 6, lost: 2, duplicates: 1, unackedDelivered: 1, corrupt: 1}
	if got.acked != want.acked || got.lost != want.lost || got.duplicates != want.duplicates ||
		got.unackedDelivered != want.unackedDelivered || got.corrupt != want.corrupt {
		t.Errorf("tally = %+v, want %+v", got, want)
	}
	wantLat := []time.Duration{1, 2, 3, 4, 5}
	if len(got.latencies) != len(wantLat) {
		t.Fatalf("latencies = %v", got.latencies)
	}
	for i, l := range got.latencies {
		if l != wantLat[i]*time.Millisecond {
			t.Errorf("latencies = %v, want sorted first deliveries", got.latencies)
			break
		}
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0.1, 1}} {
		if got := percentile(lat, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty p50 = %v", got)
	}
}

// TestRunShort runs both phases for a second each, in-process, and checks
// that the result is complete and sane: traffic flowed, every acked
// message arrived once and intact, and no request stalled.
func TestRunShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{
		Scenario: "test",
		Senders:  8,
		// One connection per sender: each connection has 100 stream
		// credits, and a server that fails to return credits (see
		// drainFIN in relay.go) then shows as a stall only under longer
		// runs; the window check below still catches a stall here.
		SendersPerConn: 1,
		Duration:       time.Second,
		Drain:          5 * time.Second,
		Baseline:       true,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	check := func(name string, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s: %+v", name, res)
		}
	}
	check("scenario", res.Scenario == "test" && res.Target == "in-process")
	check("sizes", res.RecordBytes == 2048 && res.EnvelopeBytes == 1991)
	check("senders", res.Senders == 8 && res.SenderConns == 8)
	check("messages", res.Messages > 0 && res.MsgsPerS > 0)
	check("baseline", res.BaselineMessages > 0 && res.BaselineMsgsPerS > 0)
	check("ratio", res.Ratio > 0 && abs(res.Ratio-res.MsgsPerS/res.BaselineMsgsPerS) < 0.01)
	check("rate", abs(res.MsgsPerS*res.DurationS-float64(res.Messages)) <= 0.01*float64(res.Messages)+1)
	check("lost", res.Lost == 0 && res.BaselineLost == 0)
	check("duplicates", res.Duplicates == 0 && res.BaselineDuplicates == 0)
	check("corrupt", res.Corrupt == 0)
	check("errors", res.SendErrors == 0 && res.BaselineSendErrors == 0 && res.AckErrors == 0 && res.UnackedDelivered == 0)
	check("latency", res.P50Ms > 0 && res.P99Ms >= res.P50Ms && res.BaselineP50Ms > 0 && res.BaselineP99Ms >= res.BaselineP50Ms)
	// A stalled request shows up as a send window far past Duration.
	check("window", res.DurationS >= 1 && res.DurationS < 5 && res.MaxSendMs < 4000 && res.BaselineMaxSendMs < 4000)
	check("store", res.StoreCommits > 0 && res.StoreOps >= res.StoreCommits && res.MeanBatch >= 1 &&
		res.LargestBatch >= 1 && res.MeanCommitMs > 0)
	// The stages of a send inside the store are parts of the whole call.
	check("stages", res.MeanSendMs > 0 && res.BaselineMeanSendMs > 0 && res.StoreTxnMs > 0 &&
		res.StoreQueuedMs >= 0 && res.StoreWakeMs >= 0 &&
		res.StoreQueuedMs+res.StoreTxnMs+res.StoreWakeMs < res.MeanSendMs)
	check("pages", res.StorePagesPerOp >= 1 && res.StorePageBytes >= 1024)
}

// TestRunExternalServer points the load at a server it did not start, as
// --server does: the result must come without store statistics (the bench
// cannot see them) and the mailbox must be gone afterwards.
// TestRunTokens: the tokens phase pays a real token per create and send
// (a tokenless send to that server would be refused) and reports its
// ratio to the tokens-off phase.
func TestRunTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{
		Scenario: "tokens", Senders: 4, SendersPerConn: 1, Duration: 500 * time.Millisecond,
		Drain: 5 * time.Second, Tokens: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.TokensMessages == 0 || res.TokensMsgsPerS <= 0 || res.TokensSendErrors != 0 ||
		res.TokensLost != 0 || res.TokensDuplicates != 0 {
		t.Fatalf("tokens phase: %+v", res)
	}
	if abs(res.TokensRatio-res.TokensMsgsPerS/res.MsgsPerS) > 0.01 {
		t.Fatalf("tokens ratio %v does not match %v / %v", res.TokensRatio, res.TokensMsgsPerS, res.MsgsPerS)
	}
}

// mintTokens makes tokens the token authorizer accepts, each once.
func TestMintTokensRedeemable(t *testing.T) {
	secret := make([]byte, qtokens.MasterSecretSize)
	issuer, err := qtokens.NewIssuer(secret)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := mintTokens(issuer, 150)
	if err != nil {
		t.Fatal(err)
	}
	if len(pool.toks) != 200 { // whole batches of MaxBatch
		t.Fatalf("minted %d tokens, want 200", len(pool.toks))
	}
	auth := server.NewTokenAuthorizer(issuer, qtokens.DefaultEpochLength)
	seen := map[[32]byte]bool{}
	for range 200 {
		spend, err := auth.AuthorizeSend(context.Background(), pool.take())
		if err != nil {
			t.Fatal(err)
		}
		if seen[spend.Key] {
			t.Fatal("two tokens share a spend key")
		}
		seen[spend.Key] = true
	}
	if pool.take() != nil {
		t.Fatal("an empty pool handed out a token")
	}
}

func TestRunExternalServer(t *testing.T) {
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := &recordingStore{Store: st}
	srv, err := server.New(server.Options{Identity: id, Store: rec, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pc) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{
		Server:         id.Address(pc.LocalAddr().String()).String(),
		Senders:        4,
		SendersPerConn: 1,
		Duration:       300 * time.Millisecond,
		Logger:         logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Target != "external" || res.Messages == 0 || res.Lost != 0 || res.Duplicates != 0 || res.Corrupt != 0 {
		t.Errorf("result: %+v", res)
	}
	if res.StoreCommits != 0 || res.BaselineMsgsPerS != 0 || res.Ratio != 0 {
		t.Errorf("external run reports store or baseline figures: %+v", res)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.created) != 1 || len(rec.deleted) != 1 || rec.created[0] != rec.deleted[0] {
		t.Errorf("mailboxes created %d, deleted %d: the bench must delete what it made on a foreign server", len(rec.created), len(rec.deleted))
	}
}

// recordingStore notes which mailboxes are created and deleted.
type recordingStore struct {
	store.Store
	mu               sync.Mutex
	created, deleted [][store.MailboxIDSize]byte
}

func (r *recordingStore) CreateMailbox(ctx context.Context, m store.Mailbox, spend *store.Spend) error {
	err := r.Store.CreateMailbox(ctx, m, spend)
	if err == nil {
		r.mu.Lock()
		r.created = append(r.created, m.ReceiveID)
		r.mu.Unlock()
	}
	return err
}

func (r *recordingStore) DeleteMailbox(ctx context.Context, id [store.MailboxIDSize]byte) error {
	err := r.Store.DeleteMailbox(ctx, id)
	if err == nil {
		r.mu.Lock()
		r.deleted = append(r.deleted, id)
		r.mu.Unlock()
	}
	return err
}

func TestConfigRejectsBadValues(t *testing.T) {
	for _, cfg := range []Config{
		{RecordSize: 64},
		{Senders: -1},
		{SendersPerConn: -1},
		{Duration: -time.Second},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
