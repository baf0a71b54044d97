package tor

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cretz/bine/control"
	"github.com/cretz/bine/torutil"
	bineed "github.com/cretz/bine/torutil/ed25519"
	"github.com/quicprochat/qpc/internal/secretfile"
)

// OnionIDLen is the length of a v3 onion service ID: the address without
// ".onion".
const OnionIDLen = 56

var onionIDRe = regexp.MustCompile(`^[a-z2-7]{56}$`)

// IsOnion reports whether host (without a port) is a v3 .onion name.
func IsOnion(host string) bool {
	id, ok := strings.CutSuffix(strings.ToLower(host), ".onion")
	return ok && onionIDRe.MatchString(id)
}

// OnionID returns the 56-character service ID of an onion service key.
func OnionID(pub ed25519.PublicKey) string {
	return torutil.OnionServiceIDFromV3PublicKey(bineed.PublicKey(pub))
}

// Files in the server's data directory.
const (
	OnionKeyFile     = "onion.key"     // PKCS #8 PEM, 0600: the onion address
	OnionClientsDir  = "onion_clients" // <name>.auth, one authorized client each
	onionKeyPEMLabel = "PRIVATE KEY"
)

// LoadOrCreateOnionKey reads the onion service key at path, or creates
// one (0600) if there is none. The key is the onion address: keeping it
// keeps the address across restarts.
func LoadOrCreateOnionKey(path string) (ed25519.PrivateKey, error) {
	key, err := LoadOnionKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tor: onion key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tor: onion key: %w", err)
	}
	if err := secretfile.Create(path, pem.EncodeToMemory(&pem.Block{Type: onionKeyPEMLabel, Bytes: der})); err != nil {
		return nil, fmt.Errorf("tor: onion key: %w", err)
	}
	return key, nil
}

// LoadOnionKey reads the onion service key at path; fs.ErrNotExist if
// there is none.
func LoadOnionKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tor: onion key: %w", err)
	}
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != onionKeyPEMLabel {
		return nil, fmt.Errorf("tor: onion key %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tor: onion key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("tor: onion key %s: %T is not an Ed25519 key", path, k)
	}
	return key, nil
}

// b32 is the base32 of tor's key files: RFC 4648, upper case, unpadded.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// ClientKey is the public half of a v3 client authorization key: the
// server needs only this. Tor's file format (authorized_clients/*.auth)
// is "descriptor:x25519:<base32 public key>".
type ClientKey [32]byte

func (k ClientKey) String() string { return "descriptor:x25519:" + b32.EncodeToString(k[:]) }

// ParseClientKey reads "descriptor:x25519:<base32>" or the bare base32.
func ParseClientKey(s string) (ClientKey, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "descriptor:x25519:")
	raw, err := b32.DecodeString(strings.ToUpper(s))
	if err != nil || len(raw) != 32 {
		return ClientKey{}, fmt.Errorf("tor: client key %q is not 32 bytes of base32 (descriptor:x25519:<key>)", s)
	}
	var k ClientKey
	copy(k[:], raw)
	return k, nil
}

// ClientCredential is what an authorized client holds: the onion it may
// reach and its private x25519 key. Tor's file format
// (ClientOnionAuthDir/*.auth_private) is
// "<onion id>:descriptor:x25519:<base32 private key>".
type ClientCredential struct {
	OnionID string
	Private [32]byte
}

func (c ClientCredential) String() string {
	return c.OnionID + ":descriptor:x25519:" + b32.EncodeToString(c.Private[:])
}

// Public is the key the server must authorize.
func (c ClientCredential) Public() ClientKey {
	priv, err := ecdh.X25519().NewPrivateKey(c.Private[:])
	if err != nil { // only for a wrong length, which [32]byte excludes
		panic(err)
	}
	var k ClientKey
	copy(k[:], priv.PublicKey().Bytes())
	return k
}

// ParseClientCredential reads tor's .auth_private format.
func ParseClientCredential(s string) (ClientCredential, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) != 4 || parts[1] != "descriptor" || parts[2] != "x25519" {
		return ClientCredential{}, errors.New("tor: client credential is not <onion id>:descriptor:x25519:<base32 key>")
	}
	id := strings.TrimSuffix(strings.ToLower(parts[0]), ".onion")
	if !onionIDRe.MatchString(id) {
		return ClientCredential{}, fmt.Errorf("tor: client credential names %q, not a v3 onion", parts[0])
	}
	raw, err := b32.DecodeString(strings.ToUpper(parts[3]))
	if err != nil || len(raw) != 32 {
		return ClientCredential{}, errors.New("tor: client credential key is not 32 bytes of base32")
	}
	c := ClientCredential{OnionID: id}
	copy(c.Private[:], raw)
	return c, nil
}

// NewClientCredential makes a fresh client authorization key for onionID.
func NewClientCredential(onionID string) (ClientCredential, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return ClientCredential{}, fmt.Errorf("tor: client key: %w", err)
	}
	c := ClientCredential{OnionID: onionID}
	copy(c.Private[:], priv.Bytes())
	return c, nil
}

var clientNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// AddClient authorizes key under name in dir (OnionClientsDir), as
// <name>.auth in tor's format. A running server picks it up at its next
// start.
func AddClient(dir, name string, key ClientKey) error {
	if !clientNameRe.MatchString(name) {
		return fmt.Errorf("tor: client name %q: use 1 to 64 letters, digits, - or _", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	err := secretfile.Create(filepath.Join(dir, name+".auth"), []byte(key.String()+"\n"))
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("tor: client %q is already authorized (remove it first to replace its key)", name)
	}
	if err != nil {
		return fmt.Errorf("tor: add client %s: %w", name, err)
	}
	return nil
}

// RemoveClient withdraws the authorization of name.
func RemoveClient(dir, name string) error {
	if !clientNameRe.MatchString(name) {
		return fmt.Errorf("tor: client name %q: use 1 to 64 letters, digits, - or _", name)
	}
	err := os.Remove(filepath.Join(dir, name+".auth"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tor: no authorized client %q", name)
	}
	if err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	return nil
}

// AuthorizedClient is one entry of OnionClientsDir.
type AuthorizedClient struct {
	Name string
	Key  ClientKey
}

// Clients lists the authorized clients in dir, sorted by name; none if
// dir does not exist.
func Clients(dir string) ([]AuthorizedClient, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tor: %w", err)
	}
	var out []AuthorizedClient
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".auth")
		if !ok || e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("tor: %w", err)
		}
		k, err := ParseClientKey(string(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name()), err)
		}
		out = append(out, AuthorizedClient{Name: name, Key: k})
	}
	slices.SortFunc(out, func(a, b AuthorizedClient) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// OnionConfig publishes an onion service.
type OnionConfig struct {
	Key ed25519.PrivateKey // the service's identity (LoadOrCreateOnionKey)
	// VirtualPort is the port clients dial on the .onion address.
	VirtualPort int
	// Target is where tor forwards each stream: a TCP address on
	// 127.0.0.1, or a unix socket as "unix:/path".
	Target string
	// Clients, if not empty, turns on v3 client authorization: only
	// holders of these keys can even fetch the service's descriptor.
	Clients []ClientKey
	// ExtraPorts maps more virtual ports to targets on the same service
	// (for example a plain echo beside the tunnel, to measure the circuit).
	ExtraPorts map[int]string
	// Progress, if set, hears of the descriptor upload.
	Progress func(Progress)
}

// OnionService is a published onion service; it lasts until Close or
// until the control connection that published it ends.
type OnionService struct {
	t    *Tor
	ID   string // 56 characters, no ".onion"
	Port int
}

// Addr is "<id>.onion:<port>".
func (o *OnionService) Addr() string { return o.ID + ".onion:" + strconv.Itoa(o.Port) }

// Close withdraws the service.
func (o *OnionService) Close() error {
	if _, err := o.t.request("DEL_ONION %s", o.ID); err != nil {
		return fmt.Errorf("tor: DEL_ONION: %w", err)
	}
	return nil
}

// Publish adds the onion service and waits, until ctx is done, for tor to
// upload its descriptor to at least one HSDir, after which clients can
// reach it. The command is raw ADD_ONION because bine's ListenConf knows
// only v2 client authorization.
func (t *Tor) Publish(ctx context.Context, conf OnionConfig) (*OnionService, error) {
	if len(conf.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("tor: OnionConfig.Key is required")
	}
	if conf.VirtualPort <= 0 || conf.VirtualPort > 65535 {
		return nil, fmt.Errorf("tor: virtual port %d is not 1 to 65535", conf.VirtualPort)
	}
	if err := checkTarget(conf.Target); err != nil {
		return nil, err
	}
	id := OnionID(conf.Key.Public().(ed25519.PublicKey))
	ev, err := t.eventConn(ctx)
	if err != nil {
		return nil, err
	}
	uploads := ev.subscribe(id)
	defer ev.unsubscribe(id)

	blob := (&control.ED25519Key{KeyPair: bineed.FromCryptoPrivateKey(conf.Key)}).Blob()
	var cmd strings.Builder
	fmt.Fprintf(&cmd, "ADD_ONION ED25519-V3:%s Flags=DiscardPK", blob)
	if len(conf.Clients) > 0 {
		cmd.WriteString(",V3Auth")
		for _, c := range conf.Clients {
			cmd.WriteString(" ClientAuthV3=" + b32.EncodeToString(c[:]))
		}
	}
	fmt.Fprintf(&cmd, " Port=%d,%s", conf.VirtualPort, conf.Target)
	for port, target := range conf.ExtraPorts {
		if err := checkTarget(target); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cmd, " Port=%d,%s", port, target)
	}
	resp, err := t.request("%s", cmd.String())
	if err != nil {
		return nil, fmt.Errorf("tor: ADD_ONION: %w", err)
	}
	got := ""
	for _, d := range resp.Data {
		if v, ok := strings.CutPrefix(d, "ServiceID="); ok {
			got = v
		}
	}
	if got != id {
		return nil, fmt.Errorf("tor: ADD_ONION answered service %q, want %q", got, id)
	}
	svc := &OnionService{t: t, ID: id, Port: conf.VirtualPort}

	start := time.Now()
	report := func(pct int, summary string) {
		if conf.Progress != nil {
			conf.Progress(Progress{Stage: StagePublish, Percent: pct, Summary: summary, Elapsed: time.Since(start)})
		}
	}
	report(0, "uploading the onion service descriptor")
	// Done when at least one upload succeeded and every upload tor began
	// has ended, with no new one for a moment: a client that asks an
	// HSDir still waiting for its copy gets a 404, and tor then leaves
	// that HSDir alone for 15 minutes.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var failures []string
	began, ended, ok := 0, 0, 0
	quiet := time.Now()
	for {
		select {
		case e := <-uploads:
			quiet = time.Now()
			switch e.Action {
			case "UPLOAD":
				began++
			case "UPLOADED":
				ended++
				ok++
			case "FAILED":
				ended++
				failures = append(failures, e.Reason)
			}
		case <-tick.C:
			if ok > 0 && ended >= began && time.Since(quiet) >= time.Second {
				report(100, fmt.Sprintf("descriptor uploaded to %d HSDirs", ok))
				return svc, nil
			}
			report(0, fmt.Sprintf("uploading the onion service descriptor (%d of %d uploads done)", ended, began))
		case <-ctx.Done():
			svc.Close()
			return nil, fmt.Errorf("tor: onion descriptor not uploaded (%d of %d uploads ended, failures: %v): %w", ended, began, failures, ctx.Err())
		}
	}
}

func checkTarget(target string) error {
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("tor: onion target %q: the socket path must be absolute", target)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("tor: onion target %q: %w", target, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("tor: onion target %q must be on loopback or a unix socket", target)
	}
	return nil
}

// AuthorizeClient gives this tor (as a client) the key to reach a service
// that requires client authorization (ONION_CLIENT_AUTH_ADD).
func (t *Tor) AuthorizeClient(c ClientCredential) error {
	_, err := t.request("ONION_CLIENT_AUTH_ADD %s x25519:%s", c.OnionID, base64.StdEncoding.EncodeToString(c.Private[:]))
	if err != nil {
		return fmt.Errorf("tor: ONION_CLIENT_AUTH_ADD: %w", err)
	}
	return nil
}

// eventConn is a second control connection that only reads HS_DESC
// events, so that waits for them never share a reader with commands.
type eventConn struct {
	conn   net.Conn
	ctrl   *control.Conn
	ch     chan control.Event
	stop   chan struct{}
	mu     sync.Mutex
	subs   map[string]chan *control.HSDescEvent
	closed sync.Once
}

func (t *Tor) eventConn(ctx context.Context) (*eventConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.events != nil {
		return t.events, nil
	}
	addr, err := t.controlAddr()
	if err != nil {
		return nil, err
	}
	conn, err := dialControl(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("tor: event connection: %w", err)
	}
	c := control.NewConn(textproto.NewConn(conn))
	if err := c.Authenticate(t.password()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tor: event connection: %w", err)
	}
	ev := &eventConn{conn: conn, ctrl: c, ch: make(chan control.Event, 256), stop: make(chan struct{}), subs: map[string]chan *control.HSDescEvent{}}
	if err := c.AddEventListener(ev.ch, control.EventCodeHSDesc); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tor: SETEVENTS HS_DESC: %w", err)
	}
	evCtx, cancel := context.WithCancel(context.Background())
	go func() { <-ev.stop; cancel() }()
	go c.HandleEvents(evCtx)
	// Drain always: bine's reader blocks while a listener's channel is
	// full, and holds the connection while it does.
	go func() {
		for {
			select {
			case e := <-ev.ch:
				hs, ok := e.(*control.HSDescEvent)
				if !ok {
					continue
				}
				ev.mu.Lock()
				if sub := ev.subs[hs.Address]; sub != nil {
					select {
					case sub <- hs:
					default:
					}
				}
				ev.mu.Unlock()
			case <-ev.stop:
				return
			}
		}
	}()
	t.events = ev
	return ev, nil
}

func (e *eventConn) subscribe(id string) chan *control.HSDescEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch := make(chan *control.HSDescEvent, 64)
	e.subs[id] = ch
	return ch
}

func (e *eventConn) unsubscribe(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.subs, id)
}

func (e *eventConn) close() {
	e.closed.Do(func() {
		close(e.stop)
		e.conn.Close()
	})
}
