package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// The messenger: a Client holds a user's local state (client/state,
// encrypted under a passphrase), its identity and account session, its
// token wallet, the key-transparency verifier, contacts and conversations,
// and the outbox. docs/user-guide.md walks through it from the CLI;
// docs/protocol.md §11 gives the content formats.
//
// Connections are separated by what they reveal: one for the account
// (login, tokens, KT publishing), one per conversation for its mailbox and
// the sends to its members, one per first contact, one for key-transparency
// checkpoints, and a fresh one for every key-transparency lookup (closed
// after it). Over Tor each gets a circuit of its own, so the server cannot
// link a user's conversations to each other or to the account, nor the
// handles a user looks up to each other (a group's members).

// Errors of the messenger. Each says what to do.
var (
	ErrNotRegistered = errors.New("no account on this device yet: run `qpc register <handle>`")
	ErrNoSession     = errors.New("not logged in: run `qpc login`")
	ErrNoSuchUser    = errors.New("no such user in the key-transparency directory")
	ErrUserDeleted   = errors.New("that account was deleted")
	ErrNoSuchConv    = errors.New("no such contact, group or conversation")
	ErrNotCreator    = errors.New("only the group's creator can add or remove members")
	ErrInactive      = errors.New("you are no longer a member of this conversation")
	ErrTooLong       = errors.New("message too long for one envelope")
	// ErrNoHome: Options.Home is empty. The SDK never guesses a state
	// directory from the environment; the program gives one.
	ErrNoHome = errors.New("client: no state directory: Options.Home is empty")
)

// DefaultSuite is the MLS cipher suite of new conversations: X-Wing
// (X25519 + ML-KEM-768) with ChaCha20-Poly1305, SHA-256 and Ed25519.
const DefaultSuite = mls.SuiteXWingChaCha20Poly1305SHA256Ed25519

// Options configure Init, Open and RestoreBackup. Home is required;
// other zero values take defaults.
type Options struct {
	// Home is the state directory; it must be set (ErrNoHome). The SDK
	// reads no environment: the program chooses it (the qpc command
	// takes --home, QPC_HOME, else $XDG_DATA_HOME/qpc or
	// ~/.local/share/qpc).
	Home string
	// Passphrase unlocks the local state.
	Passphrase []byte
	// KDF tunes the Argon2id cost of a new state (Init only).
	KDF *state.Options
	// Dial is used for every connection (Tor, timeouts). Its Policy is
	// pinned in the state by Init; later connections use the pinned one
	// whatever Dial.Policy says (see PinPolicy).
	Dial protocol.Options
	// Now is the clock; default time.Now. Key-transparency answers are
	// judged by it too (KTMaxEpochAge).
	Now func() time.Time
	// KTMaxEpochAge is how far the time of the epoch a key-transparency
	// answer is under may be from Now, either way; further off, the
	// answer is refused as stale (a server freezing this client on an old
	// view of the directory). 0: kt.DefaultMaxEpochAge (15 minutes).
	KTMaxEpochAge time.Duration
	// Logger; default slog.Default. Nothing identifying is logged at Info.
	Logger *slog.Logger
	// Tap, if set, sees every request stream's bytes with the role of the
	// connection they crossed ("account", "kt", "intro", "conv:<group
	// ID>", "first:<handle>"): for tests of what each connection carries.
	Tap func(role string, stream int64, outgoing bool, b []byte)
	// ReceiptDelay is the distribution of the delay before a receipt
	// leaves; nil: DefaultReceiptDelay.
	ReceiptDelay *ReceiptDelay
	// Cover turns on cover traffic while following (see CoverOptions);
	// nil: the stored setting (SetCover), off by default.
	Cover *CoverOptions
	// Sent, if set, is told of every envelope the server stored, by its
	// message ID, and whether it was a dummy of cover traffic: the ground
	// truth for tests of what the server can tell apart.
	Sent func(id wire.MessageID, cover bool)
	// RefillMean is the mean gap between the token wallet's scheduled
	// refill checks while following; default DefaultRefillMean.
	RefillMean time.Duration
	// SentEnvelope, if set, is told of every envelope the server stored,
	// with what it carried: the ground truth of the traffic-analysis lab
	// (lab/population). It changes nothing of what is sent.
	SentEnvelope func(SentEnvelope)
	// Timing, if set, is told how long each part of sending and receiving
	// a message took (the Time* part names): for the end-to-end
	// benchmark. It changes nothing of what is done.
	Timing func(part string, d time.Duration)
	// KTLookupParallel is how many key-transparency lookup connections
	// a join may have open at once when it looks every member up
	// (KTMembersAtJoin, lookupMembers); 0: DefaultKTLookupParallel, 1:
	// one at a time.
	KTLookupParallel int
	// KTMembersAtJoin makes a join look every other member up before
	// it accepts the group, as joins did before ADR 0041, instead of
	// checking each member at its first message: for the join benchmark
	// to compare both in one run. It trades the join's time, and a burst
	// of lookups the server sees together, for nothing a user sees.
	KTMembersAtJoin bool
	// KeepReceipt, if set, is asked before each delivery receipt is
	// scheduled, with the peer it would go to; false drops that receipt.
	// It exists only for the traffic-analysis lab (lab/population plays
	// Martiny et al.'s simulated traffic, in which a share of receipts do
	// not reach the text's writer, see StrayReceipt). It is called inside
	// a state transaction: it must return at once and must not call the
	// client. nil: every receipt the settings ask for is scheduled.
	KeepReceipt func(peer string) bool
	// SingleMailbox WEAKENS PRIVACY; it exists only for the lab's naive
	// mode (lab/scenario), which plays Signal's sealed sender: every
	// conversation receives at the intro mailbox, one long-lived mailbox
	// per user, instead of at a fresh mailbox of its own, so the server
	// sees every message to a user arrive at the mailbox key
	// transparency names for them. Off by default; never set it in a
	// messenger people use.
	SingleMailbox bool
	// UpdateAfter and UpdateEvery schedule the commits that refresh
	// our leaf in each conversation (post-compromise security,
	// docs/protocol.md §11.7): after we received a text, once
	// UpdateAfter texts (plus our stagger, less than UpdateAfter) were
	// received or UpdateEvery passed since our last commit there. 0:
	// DefaultUpdateAfter, DefaultUpdateEvery; < 0: that bound is off.
	UpdateAfter int
	UpdateEvery time.Duration
	// RejoinAfter is how long messages of a later epoch must go on
	// arriving in a conversation, with its commit missing, before the
	// client asks a member for the group's state to rejoin
	// (docs/protocol.md §11.8). 0: DefaultRejoinAfter (10 minutes); < 0:
	// at once. A commit that fails to process asks at once.
	RejoinAfter time.Duration
	// RetireAfter bounds how long an outbox entry the server has
	// acknowledged may stay on disk before it is deleted (retire.go):
	// the deletion goes with the next transaction the client makes
	// anyway, or after this delay if none comes. 0: DefaultRetireAfter;
	// < 0: only with the next transaction, or at Close.
	RetireAfter time.Duration
}

// SentEnvelope describes one envelope the server stored
// (Options.SentEnvelope).
type SentEnvelope struct {
	ID     wire.MessageID
	Conv   string       // hex conversation (MLS group) ID
	To     string       // the member's handle
	SendID wire.ID      // the mailbox it went to
	Intro  bool         // to the member's intro mailbox (a Welcome)
	Kind   content.Kind // content kind; 0: a Welcome or handshake message
	Cover  bool         // a dummy of cover traffic
	Echo   bool         // a commit echo (docs/protocol.md §11.6)
	// Sent is when the request went out, before the server received it
	// (zero when not known: cover ticks); At when the server acknowledged
	// it.
	Sent time.Time
	At   time.Time
}

// MailboxInfo names one of the client's receive mailboxes
// (Client.Mailboxes).
type MailboxInfo struct {
	Conv      string // hex conversation ID; "" for the intro mailbox
	ReceiveID wire.ID
	SendID    wire.ID
}

// Mailboxes lists the client's receive mailboxes: the intro mailbox and
// each active conversation's. They are the client's own secrets' public
// halves (what the server sees); the lab writes them to its ground truth.
func (c *Client) Mailboxes() ([]MailboxInfo, error) {
	c.op.Lock()
	defer c.op.Unlock()
	var out []MailboxInfo
	if c.prof.Intro != nil {
		out = append(out, MailboxInfo{ReceiveID: c.prof.Intro.ReceiveID, SendID: c.prof.Intro.SendID})
	}
	convs, err := c.allConvs()
	if err != nil {
		return nil, err
	}
	for _, r := range convs {
		if r.Mailbox != nil && r.Active {
			out = append(out, MailboxInfo{Conv: hex.EncodeToString(r.ID), ReceiveID: r.Mailbox.ReceiveID, SendID: r.Mailbox.SendID})
		}
	}
	return out, nil
}

func (o *Options) setDefaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dial.Logger == nil {
		o.Dial.Logger = o.Logger
	}
}

// Client is one user's messenger on one device. Its methods are safe for
// concurrent use; they serialize on the local state.
type Client struct {
	opts  Options
	store *state.Store
	log   *slog.Logger

	seenPruned time.Time  // when dropStaleSeen last ran (under op)
	drops      dropAlarms // alarms for dropped envelopes, rate-limited (under op; deferred.go)
	retry      deferRetry // when Follow reads deferred envelopes again (under op; deferred.go)

	// op serializes the operations that read or change the local state
	// and the MLS groups (every exported method takes it).
	op sync.Mutex
	// retiring holds the sent outbox entries not deleted yet (retire.go).
	retiring retiring
	// floors: where our ratchets resume after a restart (reserve.go).
	floors floors
	prof   *profile
	v      *kt.Verifier
	wallet *protocol.Wallet
	// pending collects the events of the running operation.
	pending []Event

	mu      sync.Mutex // guards conns and closing
	conns   map[string]*protocol.Conn
	lookups atomic.Uint64 // names the one-shot lookup connections (for Tap)
	// kpUsed is set (under op) when a join used one of our one-time
	// KeyPackages, so that the pool is topped up after it.
	kpUsed  bool
	closing bool
	// Token refills (tokenkeys.go), also under mu: the events of alarms
	// raised outside operations, how many refill schedules run, and
	// whether a connection other than the account and checkpoint ones
	// was opened (a one-shot refill is allowed only before).
	bgEvents    []Event
	refillLoops int
	anonOpened  bool
	// Keeping the account exchanges apart from the anonymous dials in
	// time (linking.go), also under mu: the running account exchange
	// (closed when it ends), when anonymous dials may resume after the
	// last one, when the last anonymous dial began or ended, and how many
	// are under way.
	acctBusy    chan struct{}
	anonHold    time.Time
	lastAnon    time.Time
	anonDialing int

	// answers is when the server last answered this client, on any
	// connection (status.go serverCaused).
	answers answerLog
	// unshown are the outbox entries whose tokens were never shown
	// (spare.go).
	unshown unshownTokens
}

// Init creates a new local state in opts.Home for the server at addr
// (qpc://...) whose key transparency is pinned by pin, and checks that the
// server answers and its log verifies under the pin.
func Init(ctx context.Context, addr string, pin protocol.KTPin, opts Options) (*Client, error) {
	if opts.Home == "" {
		return nil, ErrNoHome
	}
	opts.setDefaults()
	if _, err := wire.ParseAddress(addr); err != nil {
		return nil, fmt.Errorf("server address: %w", err)
	}
	v, err := pin.Verifier()
	if err != nil {
		return nil, fmt.Errorf("kt pin: %w", err)
	}
	st, err := state.Create(opts.Home, opts.Passphrase, opts.KDF)
	if err != nil {
		return nil, err
	}
	c := newClient(st, opts)
	v.SetClock(opts.Now, opts.KTMaxEpochAge)
	c.v = v
	// The pin is written out, never left zero (which stands for V1).
	policy := opts.Dial.Policy
	if policy.IsZero() {
		policy = padding.Default
	}
	c.prof = &profile{Server: addr, KTVKey: pin.VKey, KTVRF: pin.VRFKey, KTConfig: pin.ConfigHash, KTWitnessPolicy: pin.WitnessPolicy, Policy: policy}
	conn, err := c.conn(ctx, connKT)
	if err == nil {
		_, err = conn.KTCheckpoint(ctx, c.v)
	}
	if err != nil {
		c.Close()
		os.Remove(filepath.Join(opts.Home, "state.db"))
		return nil, fmt.Errorf("checking the server: %w", err)
	}
	if err := c.saveProfile(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Open opens an existing local state.
func Open(opts Options) (*Client, error) {
	if opts.Home == "" {
		return nil, ErrNoHome
	}
	opts.setDefaults()
	st, err := state.Open(opts.Home, opts.Passphrase, nil)
	if err != nil {
		return nil, err
	}
	c := newClient(st, opts)
	if err := c.loadProfile(); err != nil {
		st.Close()
		return nil, err
	}
	v, err := c.prof.ktPin().Verifier()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("kt pin in the local state: %w", err)
	}
	if len(c.prof.Checkpoint) > 0 {
		if err := v.SetLatest(c.prof.Checkpoint); err != nil {
			st.Close()
			return nil, fmt.Errorf("stored checkpoint: %w", err)
		}
	}
	v.SetClock(opts.Now, opts.KTMaxEpochAge)
	c.v = v
	return c, nil
}

func newClient(st *state.Store, opts Options) *Client {
	return &Client{opts: opts, store: st, log: opts.Logger, conns: map[string]*protocol.Conn{}}
}

// Close closes every connection and the local state.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	conns := c.conns
	c.conns = map[string]*protocol.Conn{}
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.retireAll()
	c.retiring.close()
	return c.store.Close()
}

// Home is the state directory.
func (c *Client) Home() string { return c.opts.Home }

// Server is the server address the state was created for.
func (c *Client) Server() string { return c.prof.Server }

// Handle is the registered handle, "" before registration.
func (c *Client) Handle() string {
	c.op.Lock()
	defer c.op.Unlock()
	return c.prof.Handle
}

// Connection roles (see the package comment on connections).
const (
	connAccount = "account"
	connKT      = "kt"
	connIntro   = "intro"
	// connKTLookup prefixes the one-shot connections of KT lookups:
	// "kt-lookup:1", "kt-lookup:2", ... (see lookupLabel).
	connKTLookup = "kt-lookup"
	// connKPFetch prefixes the one-shot connections that take a contact's
	// one-time KeyPackage (see fetchOneTimeKP).
	connKPFetch = "kp-fetch"
	// connTokenKey is the one-shot connection of a run's token-key check
	// (checkTokenKey): no session, so an anonymous one.
	connTokenKey = "token-key"
)

func connForConv(id []byte) string { return "conv:" + hex.EncodeToString(id) }
func connForFirst(h string) string { return "first:" + h }

// cachedConn returns the open connection for a role, or nil.
func (c *Client) cachedConn(key string) *protocol.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil
	}
	return c.conns[key]
}

// conn returns the connection for a role, dialling it the first time.
func (c *Client) conn(ctx context.Context, key string) (*protocol.Conn, error) {
	c.mu.Lock()
	if conn := c.conns[key]; conn != nil && !c.closing {
		c.mu.Unlock()
		return conn, nil
	}
	c.mu.Unlock()
	conn, err := c.dial(ctx, key)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev := c.conns[key]; prev != nil {
		conn.Close()
		return prev, nil
	}
	c.conns[key] = conn
	return conn, nil
}

// dial opens a new connection for a role; conn caches it, one-shot users
// close it themselves.
func (c *Client) dial(ctx context.Context, key string) (*protocol.Conn, error) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil, protocol.ErrClosed
	}
	addr := c.prof.Server
	policy := c.prof.Policy
	c.mu.Unlock()
	if key != connAccount && key != connKT {
		if err := c.awaitAnonymous(ctx); err != nil {
			return nil, err
		}
		defer c.anonDialed()
	}
	opts := c.opts.Dial
	opts.Policy = pinned(policy)
	opts.Answered = c.answers.mark
	if tap := c.opts.Tap; tap != nil {
		opts.Tap = func(stream int64, outgoing bool, b []byte) { tap(key, stream, outgoing, b) }
	}
	if opts.Tor != nil {
		t := *opts.Tor
		t.Isolation = "" // a random circuit per connection
		opts.Tor = &t
	}
	return protocol.Dial(ctx, addr, opts)
}

// lookupLabel looks label up in key transparency on a connection of its
// own, closed afterwards (and over Tor on a circuit of its own). The
// server learns each label looked up, since it computes the VRF; lookups
// sharing a connection would also tell it that one client wants all of
// them, such as a group's members when the user joins
// (docs/key-transparency.md §5). The price is a handshake per lookup;
// ensureContact spares repeated lookups within the hour.
func (c *Client) lookupLabel(ctx context.Context, label string) (*kt.LookupResult, *kt.Binding, error) {
	defer c.timed(TimeKTLookup, time.Now())
	conn, err := c.dial(ctx, fmt.Sprintf("%s:%d", connKTLookup, c.lookups.Add(1)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	res, b, err := conn.KTLookup(ctx, c.v, label)
	if errors.Is(err, kt.ErrAdvanced) {
		// Another answer moved the newest checkpoint meanwhile: ask
		// again, proving consistency from the new one.
		res, b, err = conn.KTLookup(ctx, c.v, label)
	}
	return res, b, err
}

// profile is the device's identity and account, one encrypted record.
type profile struct {
	Server   string
	KTVKey   string
	KTVRF    []byte
	KTConfig [32]byte
	// KTWitnessPolicy is the pinned witness policy (kt.WitnessPolicy
	// text); empty: none.
	KTWitnessPolicy string `json:",omitempty"`
	// Policy is the padding policy pinned for the server at Init
	// (Options.Dial.Policy, else padding.Default) or by PinPolicy;
	// the zero Policy, in states made before Init wrote the pin, pins
	// padding.V1 (pinned).
	Policy padding.Policy `json:",omitzero"`

	Handle      string
	IdentityKey ed25519.PrivateKey // published in KT, seals envelopes
	MLSSuite    mls.CipherSuiteID
	MLSSigPriv  []byte // the device's MLS signature key (Ed25519), in KT DeviceKeys
	MLSSigPub   []byte
	KeyPackage  []byte // the last-resort KeyPackage published in KT
	KPInitPriv  []byte
	KPEncPriv   []byte
	Intro       *mailboxRecord
	Device      [16]byte
	Session     *protocol.Session

	KTPublished map[uint32][32]byte // versions the server answered our publishes with (and: we published)
	KTOwner     *kt.OwnerState      // monitoring by version (nil: from KTPublished, an older profile)
	KTChecked   uint64
	Checkpoint  []byte // the newest verified KT checkpoint

	PendingGossip []pendingGossip // gossiped checkpoints to compare later
	OwnerCheck    ownerCheck      `json:",omitzero"` // how owner monitoring went (status.go)

	RecvCursor uint64 // the history entry up to which Recv has reported
}

// ktPin is the key-transparency pin the profile holds.
func (p *profile) ktPin() protocol.KTPin {
	return protocol.KTPin{VKey: p.KTVKey, VRFKey: p.KTVRF, ConfigHash: p.KTConfig, WitnessPolicy: p.KTWitnessPolicy}
}

// mailboxRecord is one of our receive mailboxes with its sealing key.
type mailboxRecord struct {
	ReceiveID wire.ID
	SendID    wire.ID
	OwnerKey  ed25519.PrivateKey
	Sealing   []byte // sealed.MailboxPrivateKey.MarshalBinary
	After     uint64 // the delivery sequence number processed up to
}

func (m *mailboxRecord) mailbox() *protocol.Mailbox {
	return &protocol.Mailbox{ReceiveID: m.ReceiveID, SendID: m.SendID, Key: m.OwnerKey}
}

// Bucket names of the local state.
const (
	bucketMeta     = "meta"
	bucketContacts = "contacts"
	bucketConvs    = "convs"
	bucketOutbox   = "outbox"
	bucketHistory  = "history"
	bucketSeen     = "seen"
	bucketAlarms   = "alarms"
)

var keyProfile = []byte("profile")
var keyWallet = []byte("wallet")

func (c *Client) loadProfile() error {
	return c.store.View(func(tx *state.Tx) error {
		raw, err := tx.Get(bucketMeta, keyProfile)
		if err != nil {
			return err
		}
		p := new(profile)
		if err := json.Unmarshal(raw, p); err != nil {
			return fmt.Errorf("%w: profile: %v", state.ErrCorrupt, err)
		}
		c.prof = p
		return nil
	})
}

// saveProfile persists the profile, with the verifier's newest checkpoint.
func (c *Client) saveProfile() error {
	return c.store.Update(func(tx *state.Tx) error { return c.putProfile(tx) })
}

func (c *Client) putProfile(tx *state.Tx) error {
	if cp := c.v.Latest(); cp != nil {
		c.prof.Checkpoint = cp.Raw
	}
	raw, err := json.Marshal(c.prof)
	if err != nil {
		return err
	}
	// Every envelope's commit stores the profile (its gossip may have
	// changed it), but mostly it has not changed: its several KB are not
	// written again then, one overflow run fewer in that commit.
	if old, err := tx.Get(bucketMeta, keyProfile); err == nil && bytes.Equal(old, raw) {
		return nil
	}
	return tx.Put(bucketMeta, keyProfile, raw)
}

func getJSON(tx *state.Tx, bucket string, key []byte, v any) error {
	raw, err := tx.Get(bucket, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s: %v", state.ErrCorrupt, bucket, err)
	}
	return nil
}

func putJSON(tx *state.Tx, bucket string, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, raw)
}

// walletStore keeps the token wallet inside the encrypted state.
type walletStore struct{ st *state.Store }

func (w walletStore) Load() ([]byte, error) {
	var raw []byte
	err := w.st.View(func(tx *state.Tx) error {
		b, err := tx.Get(bucketMeta, keyWallet)
		if errors.Is(err, state.ErrNoEntry) {
			return nil
		}
		raw = b
		return err
	})
	return raw, err
}

func (w walletStore) Save(b []byte) error {
	return w.st.Update(func(tx *state.Tx) error { return tx.Put(bucketMeta, keyWallet, b) })
}

// ReadSecret reads one line from r, for passwords and passphrases given
// on standard input.
func ReadSecret(r io.Reader) ([]byte, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return nil, err
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}
