package e2e

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// TestKeyPackagePoolOverTheWire drives the KeyPackage pool (protocol.md
// §4.12) through a real server and client: an account uploads with its
// session, an anonymous connection takes with tokens, first in first out;
// an empty pool and an unknown handle answer alike; a token pays once; a
// full pool refuses the whole upload; the pool dies with the account. The
// server's log at the default level never names the handle.
func TestKeyPackagePoolOverTheWire(t *testing.T) {
	m := metrics.New("test")
	ts := startSecureServer(t, withMetrics(m, func(o *server.Options) { o.KeyPackagePool = 5 }))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	// The owner's connection carries its session; fetches go on another.
	acct, anon := dial(t, ts, protocol.Options{}), dial(t, ts, protocol.Options{})
	const handle = "zelda.kp-owner"
	sess := registered(t, acct, handle)

	pool := func(want int) {
		t.Helper()
		count, limit, err := acct.UploadKeyPackages(ctx, sess, nil)
		if err != nil || count != want || limit != 5 {
			t.Fatalf("pool query = %d of %d, %v; want %d of 5", count, limit, err, want)
		}
	}
	kp := func(i int) []byte {
		return bytes.Repeat(fmt.Appendf(nil, "kp-%02d|", i), 50) // ~300 bytes, as opaque as the real thing
	}
	pool(0)
	first := [][]byte{kp(0), kp(1), kp(2)}
	if count, limit, err := acct.UploadKeyPackages(ctx, sess, first); err != nil || count != 3 || limit != 5 {
		t.Fatalf("upload = %d of %d, %v; want 3 of 5", count, limit, err)
	}
	pool(3)

	toks := wallet(t, acct, sess, 8)
	for i, want := range first {
		got, err := anon.FetchKeyPackage(ctx, handle, toks[i])
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("fetch %d = %.12q, %v; want %.12q", i, got, err, want)
		}
	}
	pool(0)
	if got, err := anon.FetchKeyPackage(ctx, handle, toks[3]); err != nil || got != nil {
		t.Fatalf("fetch from an empty pool = %.12q, %v; want nil, nil", got, err)
	}
	if _, err := anon.FetchKeyPackage(ctx, handle, toks[0]); !isCode(err, wire.CodeTokenSpent) {
		t.Fatalf("fetch with a spent token: %v, want TOKEN_SPENT", err)
	}
	if _, err := anon.FetchKeyPackage(ctx, handle, nil); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("fetch without a token: %v, want TOKEN_MISSING", err)
	}
	// A session is not a token: the anonymous path does not know sessions.
	if _, err := anon.FetchKeyPackage(ctx, handle, sess.Token[:]); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("fetch with a session as auth: %v, want TOKEN_MISSING", err)
	}

	// Unknown and not-normalised handles: the empty pool's answer.
	second := [][]byte{kp(3), kp(4), kp(5), kp(6)}
	if count, _, err := acct.UploadKeyPackages(ctx, sess, second); err != nil || count != 4 {
		t.Fatalf("second upload = %d, %v; want 4", count, err)
	}
	for i, h := range []string{"nobody.here", strings.ToUpper(handle)} {
		if got, err := anon.FetchKeyPackage(ctx, h, toks[4+i]); err != nil || got != nil {
			t.Fatalf("fetch for %q = %.12q, %v; want nil, nil", h, got, err)
		}
	}

	// Over the limit: refused whole, with QUOTA.
	if _, _, err := acct.UploadKeyPackages(ctx, sess, [][]byte{kp(7), kp(8)}); !isCode(err, wire.CodeQuota) {
		t.Fatalf("upload past the limit: %v, want QUOTA", err)
	}
	pool(4)
	// The client refuses what the wire cannot carry before it sends it.
	if _, _, err := acct.UploadKeyPackages(ctx, sess, make([][]byte, wire.MaxKeyPackageUpload+1)); err == nil {
		t.Fatal("an upload of 11 KeyPackages was sent")
	}
	if _, _, err := acct.UploadKeyPackages(ctx, sess, [][]byte{{}}); err == nil {
		t.Fatal("an empty KeyPackage was sent")
	}
	if _, err := anon.FetchKeyPackage(ctx, "", toks[6]); err == nil {
		t.Fatal("a fetch without a handle was sent")
	}
	pool(4)
	// Uploads need a live session.
	bogus := *sess
	bogus.Token[0] ^= 1
	if _, _, err := acct.UploadKeyPackages(ctx, &bogus, [][]byte{kp(9)}); !isCode(err, wire.CodeAuth) {
		t.Fatalf("upload with a bad session: %v, want AUTH", err)
	}
	if got, err := anon.FetchKeyPackage(ctx, handle, toks[6]); err != nil || !bytes.Equal(got, second[0]) {
		t.Fatalf("fetch after the refusals = %.12q, %v; want %.12q", got, err, second[0])
	}

	// Deleting the account deletes its pool.
	if err := acct.DeleteAccount(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if got, err := anon.FetchKeyPackage(ctx, handle, toks[7]); err != nil || got != nil {
		t.Fatalf("fetch from a deleted account = %.12q, %v; want nil, nil", got, err)
	}

	fams := scrape(t, base)
	for _, c := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"qpc_key_packages_uploaded_total", nil, 7},
		{"qpc_key_package_fetches_total", []string{"result", "served"}, 4},
		{"qpc_key_package_fetches_total", []string{"result", "empty"}, 4},
		{"qpc_tokens_redeemed_total", nil, 8},
		{"qpc_tokens_rejected_total", []string{"reason", "TOKEN_SPENT"}, 1},
		{"qpc_requests_total", []string{"kind", "fetch_key_package"}, 11},
		{"qpc_request_errors_total", []string{"kind", "upload_key_packages", "code", "QUOTA"}, 1},
	} {
		if got := value(fams, c.name, c.match...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.match, got, c.want)
		}
	}

	secrets := []string{handle, strings.ToUpper(handle), "nobody.here", "kp-0"}
	for _, b := range [][]byte{sess.Token[:], toks[0]} {
		secrets = append(secrets, hex.EncodeToString(b), base64URL(b), base64Std(b))
	}
	stopAndScanLog(t, ts, secrets)
}

// TestKeyPackagePoolWithoutAccounts: a server without accounts has no
// pools; both requests are UNAVAILABLE, and a fetch spends nothing.
func TestKeyPackagePoolWithoutAccounts(t *testing.T) {
	ts := startServer(t, nil)
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{MaxAttempts: 1})
	if _, _, err := c.UploadKeyPackages(ctx, &protocol.Session{}, nil); !isCode(err, wire.CodeUnavailable) {
		t.Fatalf("upload: %v, want UNAVAILABLE", err)
	}
	if _, err := c.FetchKeyPackage(ctx, "someone", nil); !isCode(err, wire.CodeUnavailable) {
		t.Fatalf("fetch: %v, want UNAVAILABLE", err)
	}
}
