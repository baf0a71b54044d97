package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"

	dto "github.com/prometheus/client_model/go"
)

// withMetrics gives a test server its own metrics.
func withMetrics(m *metrics.Metrics, more func(*server.Options)) func(*server.Options) {
	return func(o *server.Options) {
		o.Metrics = m
		if more != nil {
			more(o)
		}
	}
}

// serveAdmin serves the server's admin handler on a real loopback HTTP
// listener and returns its base URL.
func serveAdmin(t *testing.T, ts *testServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ts.srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	base := "http://" + ln.Addr().String()
	// The harness starts Serve in a goroutine: wait until its listener is
	// registered, which /readyz reports, before a test looks.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, body := httpGet(t, base+"/readyz")
		if !strings.Contains(body, "listeners: none up yet") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never listened: %q", body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return base
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrape fetches /metrics over HTTP and parses it.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the sum of the series of family name whose labels include
// every pair in match.
func value(fams map[string]*dto.MetricFamily, name string, match ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	var sum float64
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			ok = ok && labels[match[i]] == match[i+1]
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func TestAdminEndpoints(t *testing.T) {
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, nil))
	base := serveAdmin(t, ts)

	if code, body := httpGet(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	c := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrape(t, base)
	for name, want := range map[string]float64{
		"qpc_ready":                           1,
		"qpc_draining":                        0,
		"qpc_store_messages_queued":           3,
		"qpc_store_mailboxes":                 1,
		"qpc_store_idempotency_keys":          3,
		"qpc_store_unreadable_messages_total": 0,
		"qpc_connections_open":                1,
		"qpc_hello_versions_total":            1,
		"qpc_kt_epoch_lag":                    0,
		"qpc_tor_onion_published":             0,
		"qpc_connections_accepted_total":      1,
	} {
		if got := value(fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := value(fams, "qpc_requests_total", "kind", "send"); got != 3 {
		t.Errorf("sends counted: %v, want 3", got)
	}
	// A latency is observed once the response is written, which the
	// client may see first: wait for the third.
	for deadline := time.Now().Add(5 * time.Second); ; {
		got := value(fams, "qpc_request_duration_seconds", "kind", "send")
		if got == 3 {
			break
		}
		if got > 3 || time.Now().After(deadline) {
			t.Fatalf("send latencies observed: %v, want 3", got)
		}
		time.Sleep(10 * time.Millisecond)
		fams = scrape(t, base)
	}
	if got := value(fams, "qpc_store_commit_batch_ops"); got < 1 {
		t.Errorf("store commits observed: %v", got)
	}
	for name := range fams {
		if !strings.HasPrefix(name, "qpc_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s: our names start with qpc_", name)
		}
	}

	// A request still running holds the drain; /readyz is 503 from its
	// first moment, and /healthz stays 200.
	sub, err := c.Subscribe(ctx, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(sctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := httpGet(t, base+"/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz during drain: %d %q", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz during drain: %d", code)
	}
	<-done
	fams = scrape(t, base)
	if value(fams, "qpc_draining") != 1 || value(fams, "qpc_ready") != 0 {
		t.Errorf("after drain: draining=%v ready=%v", value(fams, "qpc_draining"), value(fams, "qpc_ready"))
	}
}

func TestReadyzReportsChecks(t *testing.T) {
	ts := startServer(t, withMetrics(metrics.New("test"), nil))
	base := serveAdmin(t, ts)
	var published sync.Mutex
	up := false
	ts.srv.AddReadyCheck("tor", func(context.Context) error {
		published.Lock()
		defer published.Unlock()
		if !up {
			return errors.New("onion service not published")
		}
		return nil
	})
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "tor: onion service not published") {
		t.Fatalf("/readyz with tor down: %d %q", code, body)
	}
	published.Lock()
	up = true
	published.Unlock()
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz with tor up: %d %q", code, body)
	}
	// A closed store is not ready either.
	ts.store.Close()
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "store") {
		t.Fatalf("/readyz with the store closed: %d %q", code, body)
	}
}

// allowedLabels are the only label names a series may carry, with the
// values each may take. Anything else could be an identifier.
var allowedLabels = map[string]*regexp.Regexp{
	"kind":      regexp.MustCompile(`^(` + strings.Join(metrics.RequestKinds(), "|") + `|other|unread)$`),
	"code":      regexp.MustCompile(`^[A-Z_]{3,16}$`),
	"reason":    regexp.MustCompile(`^TOKEN_(MISSING|INVALID|SPENT|EXPIRED)$`),
	"limit":     regexp.MustCompile(`^(connections|connections_per_addr|connections_per_net|connections_tor|request_rate|draining|request_timeout|delivery_bytes|subscriptions|kt_publish|kt_queue|kt_proofs|streams_per_addr|streams|request_bytes)$`),
	"transport": regexp.MustCompile(`^(udp|tor)$`),
	"outcome":   regexp.MustCompile(`^(success|failure|rate_limited|abandoned|error)$`),
	"result":    regexp.MustCompile(`^(served|empty)$`),
	"version":   regexp.MustCompile(`^([0-9]{1,5}|test)$`),
	"goversion": regexp.MustCompile(`^go[0-9.a-z-]+$`),
	"le":        regexp.MustCompile(`^([0-9.e+-]+|\+Inf)$`),
	"quantile":  regexp.MustCompile(`^[0-9.]+$`),
}

// Go runtime metrics carry their own fixed labels.
var runtimeLabels = map[string]bool{"version": true, "quantile": true}

// TestMetricsCarryNoIdentifiers runs every kind of request against a
// production-like server (tokens, accounts), failures included, then
// enumerates every series on /metrics: each label is one of the fixed
// set, with a value of its fixed form, and no value or name contains a
// mailbox ID, message ID, username, token or client address.
func TestMetricsCarryNoIdentifiers(t *testing.T) {
	m := metrics.New("test")
	ts := startSecureServer(t, withMetrics(m, nil))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	acct, anon := dial(t, ts, protocol.Options{}), dial(t, ts, protocol.Options{})

	sess := registered(t, acct, "carol")
	if _, err := acct.Login(ctx, "carol", []byte("wrong password"), newDevice(), "phone", cheapKSF); !isCode(err, wire.CodeAuth) {
		t.Fatalf("bad login: %v", err)
	}
	if _, err := acct.Login(ctx, "carol", []byte("correct horse carol"), newDevice(), "phone", cheapKSF); err != nil {
		t.Fatal(err)
	}
	toks := wallet(t, acct, sess, 4)
	mb, err := anon.CreateMailbox(ctx, toks[0])
	if err != nil {
		t.Fatal(err)
	}
	// Before the connection's first paid Send, which leaves it an
	// allowance of Sends without a token (docs/adr/0017).
	if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(3), nil); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("no token: %v", err)
	}
	msgID := protocol.NewMessageID()
	if _, err := anon.Send(ctx, mb.SendID, msgID, envelope(1), toks[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(2), toks[1]); !isCode(err, wire.CodeTokenSpent) {
		t.Fatalf("spent token: %v", err)
	}
	msgs, _, err := anon.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d, %v", len(msgs), err)
	}
	if _, err := anon.Ack(ctx, mb, []wire.MessageID{msgID}); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Health(ctx); err != nil {
		t.Fatal(err)
	}
	var unknown wire.ID
	unknown[0] = 0xAB
	if _, err := anon.Send(ctx, unknown, protocol.NewMessageID(), envelope(4), toks[2]); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("send to nowhere: %v", err)
	}
	// The KeyPackage pool: an upload, and a paid fetch by handle.
	if _, _, err := acct.UploadKeyPackages(ctx, sess, [][]byte{[]byte("carol's KeyPackage")}); err != nil {
		t.Fatal(err)
	}
	if kp, err := anon.FetchKeyPackage(ctx, "carol", toks[3]); err != nil || kp == nil {
		t.Fatalf("fetch key package: %q, %v", kp, err)
	}

	type expect struct {
		name  string
		match []string
		want  float64
	}
	expects := []expect{
		{"qpc_tokens_issued_total", nil, 4},
		{"qpc_tokens_redeemed_total", nil, 3}, // the create, the first send and the KeyPackage fetch
		{"qpc_tokens_rejected_total", []string{"reason", "TOKEN_SPENT"}, 1},
		{"qpc_tokens_rejected_total", []string{"reason", "TOKEN_MISSING"}, 1},
		{"qpc_logins_total", []string{"outcome", "success"}, 1},
		// OPAQUE: only the client can tell the password was wrong; the
		// server sees a login that was never finished.
		{"qpc_logins_total", []string{"outcome", "abandoned"}, 1},
		{"qpc_registrations_total", []string{"outcome", "success"}, 1},
		{"qpc_request_errors_total", []string{"kind", "send", "code", "NOT_FOUND"}, 1},
		{"qpc_key_packages_uploaded_total", nil, 1},
		{"qpc_key_package_fetches_total", []string{"result", "served"}, 1},
	}
	// Outcomes are counted once the server has written its answer (or seen
	// the client give up), which the client may notice first: re-scrape
	// until they settle.
	var fams map[string]*dto.MetricFamily
	var wrong []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		fams, wrong = scrape(t, base), nil
		for _, e := range expects {
			if got := value(fams, e.name, e.match...); got != e.want {
				wrong = append(wrong, fmt.Sprintf("%s%v = %v, want %v", e.name, e.match, got, e.want))
			}
		}
		if len(wrong) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range wrong {
		t.Error(w)
	}

	secrets := []string{"carol", "127.0.0.1", ts.host}
	for _, id := range [][]byte{mb.ReceiveID[:], mb.SendID[:], msgID[:], unknown[:], toks[0], toks[1], toks[3]} {
		secrets = append(secrets, encodings(id)...)
	}
	_, port, _ := net.SplitHostPort(ts.host)
	series := 0
	for name, f := range fams {
		for _, s := range secrets {
			if s != "" && strings.Contains(name, s) {
				t.Errorf("metric name %s contains an identifier", name)
			}
		}
		for _, met := range f.Metric {
			series++
			for _, l := range met.Label {
				re, ok := allowedLabels[l.GetName()]
				if !ok || (strings.HasPrefix(name, "go_") && !runtimeLabels[l.GetName()]) {
					t.Errorf("%s: label %q is not in the allowed set", name, l.GetName())
					continue
				}
				if !re.MatchString(l.GetValue()) && !strings.HasPrefix(name, "go_") {
					t.Errorf("%s: label %s=%q is not of the allowed form", name, l.GetName(), l.GetValue())
				}
				for _, s := range append(secrets, port) {
					if len(s) >= 4 && strings.Contains(l.GetValue(), s) {
						t.Errorf("%s: label %s=%q contains an identifier", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	}
	if series < 50 {
		t.Fatalf("only %d series: the scrape is not the real one", series)
	}
	t.Logf("%d families, %d series checked", len(fams), series)
}

// encodings lists the ways an identifier could be written.
func encodings(b []byte) []string {
	return []string{fmt.Sprintf("%x", b), fmt.Sprintf("%X", b), base64URL(b), base64Std(b), string(b)}
}

// dialOnce dials with no retries, so a refusal comes back as it is.
func dialOnce(ts *testServer) (*protocol.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return protocol.Dial(ctx, ts.addr, protocol.Options{MaxAttempts: 1})
}

func TestConnectionLimitPerAddress(t *testing.T) {
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) { o.MaxConnsPerAddr = 3 }))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	var conns []*protocol.Conn
	for range 3 {
		conns = append(conns, dial(t, ts, protocol.Options{}))
	}
	mb, err := conns[0].CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := dialOnce(ts)
		if !isCode(err, wire.CodeRateLimited) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("fourth connection from one address: %v, want RATE_LIMITED", err)
		}
	}
	// The admitted clients keep working while others are refused.
	for i, c := range conns {
		if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatalf("client %d after the refusals: %v", i, err)
		}
	}
	fams := scrape(t, base)
	if got := value(fams, "qpc_limit_refusals_total", "limit", "connections_per_addr"); got != 2 {
		t.Errorf("per-address refusals counted: %v, want 2", got)
	}
	if got := value(fams, "qpc_connections_open"); got != 3 {
		t.Errorf("open connections: %v, want 3", got)
	}
	// A slot freed is a slot to take.
	conns[2].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialOnce(ts)
		if err == nil {
			c.Close()
			break
		}
		if !isCode(err, wire.CodeRateLimited) || time.Now().After(deadline) {
			t.Fatalf("after a client left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnectionLimitGlobalAndTor(t *testing.T) {
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, func(o *server.Options) {
		o.MaxConns, o.MaxConnsPerAddr = 3, 1
		o.MaxConnsTor = 3 // the onion cap is TestAttackOnionFlood's (internal/hostile)
	}))
	base := serveAdmin(t, ts)
	// A second listener plays the onion tunnel: every client there comes
	// from one address, and the per-address limit must not apply.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.srv.ServeTransport(pc, metrics.TransportTor)
	id, err := server.LoadIdentity(ts.dir)
	if err != nil {
		t.Fatal(err)
	}
	torAddr := id.Address(pc.LocalAddr().String()).String()
	dialTor := func() (*protocol.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return protocol.Dial(ctx, torAddr, protocol.Options{MaxAttempts: 1})
	}
	clear := dial(t, ts, protocol.Options{})
	if c, err := dialOnce(ts); !isCode(err, wire.CodeRateLimited) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("second clearnet connection: %v, want RATE_LIMITED", err)
	}
	var tor []*protocol.Conn
	for i := range 2 {
		c, err := dialTor()
		if err != nil {
			t.Fatalf("tor connection %d: %v (the per-address limit must not apply)", i, err)
		}
		defer c.Close()
		tor = append(tor, c)
	}
	if c, err := dialTor(); !isCode(err, wire.CodeUnavailable) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("fourth connection overall: %v, want UNAVAILABLE (global limit)", err)
	}
	ctx := ctxT(t)
	for _, c := range append(tor, clear) {
		if _, err := c.Health(ctx); err != nil {
			t.Fatalf("admitted client: %v", err)
		}
	}
	fams := scrape(t, base)
	if got := value(fams, "qpc_limit_refusals_total", "limit", "connections"); got != 1 {
		t.Errorf("global refusals: %v, want 1", got)
	}
	if got := value(fams, "qpc_connections_open", "transport", "tor"); got != 2 {
		t.Errorf("tor connections open: %v, want 2", got)
	}
}

func TestRequestRateLimit(t *testing.T) {
	m := metrics.New("test")
	// Practically no refill during the test: the burst is the allowance.
	ts := startServer(t, withMetrics(m, func(o *server.Options) { o.RequestRate, o.RequestBurst = 0.01, 8 }))
	base := serveAdmin(t, ts)
	ctx := ctxT(t)
	greedy := dial(t, ts, protocol.Options{MaxAttempts: 1})
	calm := dial(t, ts, protocol.Options{MaxAttempts: 1})
	ok, limited := 0, 0
	for range 12 {
		_, err := greedy.Health(ctx)
		switch {
		case err == nil:
			ok++
		case isCode(err, wire.CodeRateLimited):
			limited++
		default:
			t.Fatalf("health: %v", err)
		}
	}
	if ok != 8 || limited != 4 {
		t.Fatalf("greedy connection: %d served, %d limited; want 8 and 4", ok, limited)
	}
	// Another connection has its own allowance.
	for i := range 8 {
		if _, err := calm.Health(ctx); err != nil {
			t.Fatalf("calm connection request %d: %v", i, err)
		}
	}
	fams := scrape(t, base)
	if got := value(fams, "qpc_limit_refusals_total", "limit", "request_rate"); got != 4 {
		t.Errorf("rate refusals: %v, want 4", got)
	}
	if got := value(fams, "qpc_request_errors_total", "kind", "unread", "code", "RATE_LIMITED"); got != 0 {
		t.Errorf("refusals are counted as limits, not as request errors: %v", got)
	}
}

// versionConn opens a raw QUIC connection offering alpns, then runs the
// hello offering versions.
func versionConn(t *testing.T, host string, alpns []string, versions []uint16) (string, wire.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, host, &tls.Config{
		InsecureSkipVerify: true, NextProtos: alpns, MinVersion: tls.VersionTLS13,
	}, nil)
	if err != nil {
		return "", nil, err
	}
	defer qc.CloseWithError(0, "")
	rec, err := wire.AppendMessage(nil, padding.Control, &wire.ClientHello{Versions: versions})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rawRoundTrip(t, qc, padding.Control, rec)
	return qc.ConnectionState().TLS.NegotiatedProtocol, m, err
}

// TestVersionNegotiation runs a server that accepts a synthetic version 2
// and version 1: each client gets the highest version both speak, in
// TLS and in the hello alike; a client that only speaks a retired or
// unknown version is refused.
func TestVersionNegotiation(t *testing.T) {
	ts := startServer(t, func(o *server.Options) { o.Versions = []uint16{2, 1} })
	for _, c := range []struct {
		name     string
		alpns    []string
		versions []uint16
		alpn     string
		want     uint16 // 0: VERSION error
	}{
		{"new client", []string{"qpc/2", "qpc/1"}, []uint16{1, 2}, "qpc/2", 2},
		{"new client, other order", []string{"qpc/1", "qpc/2"}, []uint16{2, 1}, "qpc/2", 2},
		{"old client", []string{"qpc/1"}, []uint16{1}, "qpc/1", 1},
		{"future client", []string{"qpc/3", "qpc/2"}, []uint16{3, 2}, "qpc/2", 2},
		{"hello disagrees with TLS", []string{"qpc/1"}, []uint16{1, 2}, "qpc/1", 0},
		{"hello lists no common version", []string{"qpc/2"}, []uint16{7}, "qpc/2", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			alpn, m, err := versionConn(t, ts.host, c.alpns, c.versions)
			if err != nil {
				t.Fatal(err)
			}
			if alpn != c.alpn {
				t.Errorf("ALPN %q, want %q", alpn, c.alpn)
			}
			switch m := m.(type) {
			case *wire.ServerHello:
				if c.want == 0 || m.Version != c.want {
					t.Errorf("server chose %d, want %d", m.Version, c.want)
				}
			case *wire.ErrorMessage:
				if c.want != 0 || m.Code != wire.CodeVersion {
					t.Errorf("error %v, want version %d", m.Err(), c.want)
				}
			default:
				t.Errorf("got %T", m)
			}
		})
	}
	// No common ALPN: the TLS handshake itself fails.
	if _, _, err := versionConn(t, ts.host, []string{"qpc/3"}, []uint16{3}); err == nil {
		t.Error("a client speaking only version 3 got through TLS")
	}
	// The reference client (version 1 only) works against N=2, N-1=1.
	c := dial(t, ts, protocol.Options{})
	if _, err := c.Health(ctxT(t)); err != nil {
		t.Fatal(err)
	}

	// A server that retired version 1 refuses it in TLS.
	ts2 := startServer(t, func(o *server.Options) { o.Versions = []uint16{2} })
	if _, _, err := versionConn(t, ts2.host, []string{"qpc/1"}, []uint16{1}); err == nil {
		t.Error("a version-2-only server accepted ALPN qpc/1")
	}
	if _, err := dialOnce(ts2); err == nil {
		t.Error("the version 1 client connected to a version-2-only server")
	}
}

func TestVersionWindowEnforced(t *testing.T) {
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
	for _, vs := range [][]uint16{{3, 1}, {1, 2}, {3, 2, 1}, {0}} {
		if _, err := server.New(server.Options{Identity: id, Store: st, Versions: vs}); err == nil {
			t.Errorf("versions %v accepted", vs)
		}
	}
	srv, err := server.New(server.Options{Identity: id, Store: st, Versions: []uint16{2, 1}})
	if err != nil {
		t.Fatalf("N and N-1 refused: %v", err)
	}
	srv.Shutdown(context.Background())
	if !slices.Equal(wire.ALPNs([]uint16{2, 1}), []string{"qpc/2", "qpc/1"}) {
		t.Error("ALPN list")
	}
}

var metricName = regexp.MustCompile(`\bqpc_[a-z0-9_]+`)

// TestDeployMetricsExist: every qpc_* name that the alert rules and the
// Grafana dashboard use is served by a running server, so that neither
// silently watches nothing.
func TestDeployMetricsExist(t *testing.T) {
	m := metrics.New("test")
	ts := startServer(t, withMetrics(m, nil))
	base := serveAdmin(t, ts)
	c := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(1), nil); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, base)
	used := map[string][]string{}
	for _, path := range []string{"../../deploy/prometheus/alerts.yml", "../../deploy/grafana/qpc-dashboard.json"} {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricName.FindAllString(string(raw), -1) {
			used[name] = append(used[name], filepath.Base(path))
		}
	}
	if len(used) < 15 {
		t.Fatalf("only %d metric names found in the rules and dashboard", len(used))
	}
	for name, where := range used {
		family := name
		if _, ok := fams[family]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok {
					if f, ok := fams[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
						family = base
					}
				}
			}
		}
		if _, ok := fams[family]; !ok {
			t.Errorf("%s (used in %v) is not served by the server", name, slices.Compact(where))
		}
	}
}

// TestKTEpochLagScraped: with a key-transparency directory, the lag gauge
// is read from it at scrape time. A healthy directory is at most one epoch
// behind (the newest epoch waits for its checkpoint for a moment); kt's
// TestEpochLag covers a lagging view.
func TestKTEpochLagScraped(t *testing.T) {
	k := openKT(t, t.TempDir())
	m := metrics.New("test")
	m.SetKTEpochLag(99) // what a scrape must overwrite
	ts := startSecureServer(t, withMetrics(m, func(o *server.Options) { o.KT = k.d }))
	base := serveAdmin(t, ts)
	time.Sleep(3 * ktEpoch) // a few epochs commit
	if got := value(scrape(t, base), "qpc_kt_epoch_lag"); got < 0 || got > 1 {
		t.Fatalf("qpc_kt_epoch_lag = %v, want 0 or 1", got)
	}
}
