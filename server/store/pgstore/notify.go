package pgstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/quicprochat/qpc/server/store"
)

// Cross-node wake-ups (store.Waker; docs/scaling.md, "Cross-node
// delivery"; ADR 0038). A transaction that stores messages or deletes
// mailboxes calls pg_notify on the store's channel; PostgreSQL delivers
// the notification on commit only, to every session listening on the
// channel, each node's listener among them (Wakes). The payload is
//
//	kind (1 byte: 's' stored, 'd' deleted) | node (16 hex digits) | wake tags (32 hex digits each)
//
// A wake tag (store.WakeTagOf: HMAC-SHA256 under the wake key, derived
// from tokens.key, truncated to 16 bytes) names a mailbox to the nodes,
// which hold the key, and to nobody else: any role that may connect to
// the database may LISTEN, and learns from a payload neither a receive
// ID nor anything else it can tie to the tables
// (TestAttackListenerLearnsNoReceiveID). The tags are computed here, in
// the node, after the batch's calls told which sends stored: the key
// never reaches the database (neither a statement nor its parameters).
//
// node is the sending Store's mark on the payload (nodeMark: keyed by a
// random key of the Store, new at each start, over the rest of the
// payload): a node skips its own notifications, since its hub heard of
// its own writes already, and a listener cannot tell which payloads came
// from one node. A payload stays inside the database (and its logs if the
// operator logs statements); the server logs none. A NOTIFY payload must
// be shorter than 8000 bytes: notifyTags tags make at most 17+32*249 =
// 7985.
//
// A group-commit batch of sends notifies once per notifyTags mailboxes
// rather than once per send: a notifying commit holds PostgreSQL's
// database-wide notification lock through its WAL flush, so the less it
// queues under it the better (per batch against per send, and against
// after the commit, measured in docs/scaling.md).

const (
	kindStored  = 's'
	kindDeleted = 'd'
	nodeTagHex  = 16
	headerLen   = 1 + nodeTagHex
	tagHex      = 2 * store.WakeTagSize
	maxPayload  = 7999                              // bytes; PostgreSQL's limit is < 8000
	notifyTags  = (maxPayload - headerLen) / tagHex // wake tags per payload: 249
)

// notifyMode is how a batch of sends notifies: per batch (the default),
// per send, or not at all. Only benchmarks change it.
type notifyMode int

const (
	notifyPerBatch notifyMode = iota
	notifyPerSend
	notifyOff
	notifyAfterCommit // measured only: a transaction of its own after the batch's commit
)

// channelFor is the notification channel of the schema the store's
// tables live in: nodes of one deployment share it, deployments in other
// schemas of the same database do not hear each other. Channel names are
// identifiers, at most 63 bytes.
func channelFor(schema string) string {
	ch := "qpc_wake." + schema
	if len(ch) > 63 {
		sum := sha256.Sum256([]byte(schema))
		ch = "qpc_wake." + hex.EncodeToString(sum[:16])
	}
	return ch
}

// setupNotify picks the store's channel and node tag.
func (s *Store) setupNotify(ctx context.Context) error {
	var schema string
	if err := s.pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return storageErr(err)
	}
	s.nodeKey = make([]byte, 32)
	if _, err := rand.Read(s.nodeKey); err != nil {
		return err
	}
	s.channel = channelFor(schema)
	s.closing = make(chan struct{})
	return nil
}

// nodeMark is this node's mark on a payload of kind naming the wake tags
// tagsHex: the first 8 bytes of HMAC-SHA256 under the node's key, new at
// each start, in hex. The node knows its own payloads by it; to anyone
// else the marks of two payloads that differ are unrelated, so a
// listener cannot tell which payloads one node sent.
func (s *Store) nodeMark(kind byte, tagsHex []byte) []byte {
	m := hmac.New(sha256.New, s.nodeKey)
	m.Write([]byte{kind})
	m.Write(tagsHex)
	return hex.AppendEncode(make([]byte, 0, nodeTagHex), m.Sum(nil)[:nodeTagHex/2])
}

// own reports whether this node sent the payload p (parsed already).
func (s *Store) own(p string) bool {
	return hmac.Equal([]byte(p[1:headerLen]), s.nodeMark(p[0], []byte(p[headerLen:])))
}

// WakeTag implements store.Waker: the mailbox's tag under the store's
// wake key.
func (s *Store) WakeTag(receiveID [store.MailboxIDSize]byte) [store.WakeTagSize]byte {
	return store.WakeTagOf(s.wakeKey, receiveID)
}

// payloads are the notifications of kind naming the mailboxes rids,
// notifyTags to a payload.
func (s *Store) payloads(kind byte, rids [][store.MailboxIDSize]byte) []string {
	var out []string
	for len(rids) > 0 {
		n := min(len(rids), notifyTags)
		tags := make([]byte, 0, n*tagHex)
		for _, r := range rids[:n] {
			tag := s.WakeTag(r)
			tags = hex.AppendEncode(tags, tag[:])
		}
		p := make([]byte, 0, headerLen+len(tags))
		p = append(p, kind)
		p = append(p, s.nodeMark(kind, tags)...)
		p = append(p, tags...)
		out = append(out, string(p))
		rids = rids[n:]
	}
	return out
}

// notifyDeleted queues, in tx, the notifications that the mailboxes are
// gone.
func (s *Store) notifyDeleted(ctx context.Context, tx pgx.Tx, rids [][]byte) error {
	ids := make([][store.MailboxIDSize]byte, len(rids))
	for i, r := range rids {
		copy(ids[i][:], r)
	}
	for _, p := range s.payloads(kindDeleted, ids) {
		if _, err := tx.Exec(ctx, notifySQL, s.channel, p); err != nil {
			return err
		}
	}
	return nil
}

const notifySQL = "SELECT pg_notify($1, $2)"

// stored lists the mailboxes of the batch's calls that stored a message
// (in call order, each once: runBatch sorted the calls by send ID, so
// the sends into one mailbox are neighbours). A send refused or found a duplicate wrote
// nothing and notifies nothing: otherwise a stranger replaying one send
// (a duplicate costs no token) would make every other node wake the
// mailbox's subscribers each time (TestAttackRefusedSendsWakeNoOtherNode).
func stored(batch []*putCall) [][store.MailboxIDSize]byte {
	var rids [][store.MailboxIDSize]byte
	for _, c := range batch {
		if c.err != nil || c.res.Duplicate || (len(rids) > 0 && rids[len(rids)-1] == c.res.ReceiveID) {
			continue
		}
		rids = append(rids, c.res.ReceiveID)
	}
	return rids
}

// notifyStored queues, in tx, after the batch's calls were scanned, the
// notifications of the mailboxes they stored in: one round trip for all
// of them, and none when nothing was stored.
func (s *Store) notifyStored(ctx context.Context, tx pgx.Tx, batch []*putCall) error {
	var ps []string
	switch s.mode {
	case notifyPerBatch:
		ps = s.payloads(kindStored, stored(batch))
	case notifyPerSend:
		for _, c := range batch {
			ps = append(ps, s.payloads(kindStored, stored([]*putCall{c}))...)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, p := range ps {
		b.Queue(notifySQL, s.channel, p)
	}
	return tx.SendBatch(ctx, b).Close()
}

// notifyAfter is the notifyAfterCommit mode, which benchmarks compare:
// the batch's notifications in an autocommit statement of their own
// after its commit, so that the notification lock is not held across
// the batch's WAL flush. A node that fails between the two loses the
// wake-ups.
func (s *Store) notifyAfter(ctx context.Context, batch []*putCall) {
	if s.mode != notifyAfterCommit {
		return
	}
	b := &pgx.Batch{}
	for _, p := range s.payloads(kindStored, stored(batch)) {
		b.Queue(notifySQL, s.channel, p)
	}
	if b.Len() == 0 {
		return
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		s.log.Warn("store: notifying a batch's sends failed", "err", err)
	}
}

// parsePayload decodes a notification's payload: its kind, the tag of
// the node that sent it and its wake tags. A payload of another form is
// an error; nothing in it is trusted beyond its form.
func parsePayload(p string) (kind byte, node string, tags [][store.WakeTagSize]byte, err error) {
	if len(p) < headerLen || (len(p)-headerLen)%tagHex != 0 {
		return 0, "", nil, errors.New("malformed wake-up payload")
	}
	kind, node = p[0], p[1:headerLen]
	if kind != kindStored && kind != kindDeleted {
		return 0, "", nil, errors.New("wake-up payload of an unknown kind")
	}
	if _, err := hex.DecodeString(node); err != nil {
		return 0, "", nil, errors.New("wake-up payload with a malformed node tag")
	}
	rest := p[headerLen:]
	tags = make([][store.WakeTagSize]byte, len(rest)/tagHex)
	for i := range tags {
		if _, err := hex.Decode(tags[i][:], []byte(rest[i*tagHex:(i+1)*tagHex])); err != nil {
			return 0, "", nil, errors.New("wake-up payload with a malformed wake tag")
		}
	}
	return kind, node, tags, nil
}

// Listener timing: a connection silent for listenIdle is pinged, and a
// ping unanswered in listenPing counts as lost, so a connection that died
// without a word (a partition) is noticed within a minute. Reconnects
// back off from listenRetryMin to listenRetryMax.
var listenIdle = 30 * time.Second // a var for the test of the idle ping

const (
	listenPing     = 10 * time.Second
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
	listenStable   = time.Minute // a session this long resets the backoff
)

var _ store.Waker = (*Store)(nil)

// Wakes implements store.Waker: one connection of its own (not the
// pool's) LISTENs on the store's channel and reconnects when it fails.
func (s *Store) Wakes(ctx context.Context, fn func(store.Wake)) error {
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("pgstore: wakes: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	retry := listenRetryMin
	for {
		start := time.Now()
		up, err := s.listen(ctx, fn)
		if ctx.Err() != nil {
			return nil
		}
		if up {
			fn(store.Wake{Kind: store.WakeLost})
			// Only a session that lasted starts the backoff over: each
			// reconnect wakes every subscription the node holds, so a
			// session ended as soon as it listened, again and again, must
			// not bring a storm of reads every 100 ms
			// (TestHostileFlappingListenerBacksOff).
			if time.Since(start) >= listenStable {
				retry = listenRetryMin
			}
		}
		// The error names no payload: pgx reports the connection's
		// failure, not the notifications it carried.
		s.log.Warn("store: the wake-up listener lost its database connection; reconnecting", "err", err, "retry_in", retry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, listenRetryMax)
	}
}

// listen connects, LISTENs and reports notifications until the
// connection fails or ctx is done; up says whether it got as far as
// listening.
func (s *Store) listen(ctx context.Context, fn func(store.Wake)) (up bool, err error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] += " listener"
	// A deadline, not a cancel request, ends a wait: the idle timer
	// fires every listenIdle, and a cancel request is a new connection.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	cctx, cancel := context.WithTimeout(ctx, listenPing)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err == nil {
		err = keepIdleSession(cctx, conn)
	}
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize())
	}
	cancel()
	if conn != nil {
		defer conn.Close(context.Background())
	}
	if err != nil {
		return false, err
	}
	// Whatever was committed while nobody listened is unknown: every
	// subscriber reads its mailbox again.
	fn(store.Wake{Kind: store.WakeListening})
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
			continue
		}
		if err != nil {
			return true, err
		}
		kind, _, tags, perr := parsePayload(n.Payload)
		if perr != nil {
			s.log.Warn("store: ignored a wake-up notification", "err", perr)
			continue
		}
		if s.own(n.Payload) {
			continue
		}
		k := store.WakeStored
		if kind == kindDeleted {
			k = store.WakeDeleted
		}
		for _, tag := range tags {
			fn(store.Wake{Kind: k, Tag: tag})
		}
	}
}

// keepIdleSession exempts the listener's session from an
// idle_session_timeout set on the database or the role (PostgreSQL 14
// and later; an older server does not know it, and ends no idle
// session): the listener waits idle between notifications and pings only
// after listenIdle, so a shorter timeout would end its session again and
// again, each time losing wake-ups and waking every subscription
// (TestHostileIdleSessionTimeoutKeepsListener).
func keepIdleSession(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, "SET idle_session_timeout = 0")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: before 14
		return nil
	}
	return err
}

// KeepInUse implements store.Waker: the mailboxes' last use moves
// forward to now's day, in chunks of purgeChunk.
func (s *Store) KeepInUse(ctx context.Context, receiveIDs [][store.MailboxIDSize]byte, now time.Time) error {
	today := dayOf(now.Unix())
	for len(receiveIDs) > 0 {
		n := min(len(receiveIDs), purgeChunk)
		raw := make([][]byte, n)
		for i := range raw {
			raw[i] = receiveIDs[i][:]
		}
		err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE mailboxes SET last_used = $2 WHERE receive_id = ANY($1) AND last_used < $2", raw, today)
			return err
		})
		if err != nil {
			return fmt.Errorf("pgstore: keep in use: %w", err)
		}
		receiveIDs = receiveIDs[n:]
	}
	return nil
}
