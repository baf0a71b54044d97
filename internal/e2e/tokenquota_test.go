package e2e

import (
	"encoding/hex"
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// TestTokenQuotaOverTheWire: TokenQuota (protocol.md §4.10) reports the
// server's quota, the epoch and its length, and exactly the tokens issued
// to the session's account in the current epoch, not another account's;
// a new epoch starts from zero. A bad session is AUTH; asking changes
// nothing; the server's log never names the account.
func TestTokenQuotaOverTheWire(t *testing.T) {
	m := metrics.New("test")
	ts := startSecureServer(t, withMetrics(m, func(o *server.Options) { o.TokenQuota = 50 }))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{})
	const handle = "quentin.quota"
	sess := registered(t, c, handle)
	other := registered(t, c, "olga.quota")

	ask := func(s *protocol.Session, wantIssued int) protocol.TokenQuotaStatus {
		t.Helper()
		q, err := c.TokenQuota(ctx, s)
		if err != nil {
			t.Fatalf("token quota: %v", err)
		}
		if q.Quota != 50 || q.EpochLength != tokenEpoch || q.Issued != wantIssued {
			t.Fatalf("token quota = %+v; want quota 50, epoch length %v, issued %d", q, tokenEpoch, wantIssued)
		}
		return q
	}
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q := ask(sess, 0); q.Epoch != keys.Current {
		t.Fatalf("epoch %d, token keys say %d", q.Epoch, keys.Current)
	}
	wallet(t, c, sess, 5)
	ask(sess, 5)
	ask(sess, 5) // asking spends nothing
	wallet(t, c, sess, 2)
	ask(sess, 7)
	ask(other, 0)
	if q := ask(sess, 7); q.PerDay() != 50*24 {
		t.Fatalf("per day %v, want %d", q.PerDay(), 50*24)
	}

	ts.clock.advance(tokenEpoch)
	if q := ask(sess, 0); q.Epoch != keys.Current+1 {
		t.Fatalf("after the rollover: epoch %d, want %d", q.Epoch, keys.Current+1)
	}

	bogus := *sess
	bogus.Token[0] ^= 1
	if _, err := c.TokenQuota(ctx, &bogus); !isCode(err, wire.CodeAuth) {
		t.Fatalf("token quota on a bad session: %v, want AUTH", err)
	}
	if err := c.DeleteAccount(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TokenQuota(ctx, other); !isCode(err, wire.CodeAuth) {
		t.Fatalf("token quota of a deleted account: %v, want AUTH", err)
	}

	fams := scrape(t, base)
	if got := value(fams, "qpc_requests_total", "kind", "token_quota"); got != 9 {
		t.Errorf("token_quota requests = %v, want 9", got)
	}
	if got := value(fams, "qpc_request_errors_total", "kind", "token_quota", "code", "AUTH"); got != 2 {
		t.Errorf("token_quota AUTH errors = %v, want 2", got)
	}

	stopAndScanLog(t, ts, []string{handle, hex.EncodeToString(sess.Token[:])})
}

// TestTokenQuotaWithoutAccounts: a server without accounts and tokens
// answers UNAVAILABLE.
func TestTokenQuotaWithoutAccounts(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts, protocol.Options{MaxAttempts: 1})
	if _, err := c.TokenQuota(ctxT(t), &protocol.Session{}); !isCode(err, wire.CodeUnavailable) {
		t.Fatalf("token quota: %v, want UNAVAILABLE", err)
	}
}
