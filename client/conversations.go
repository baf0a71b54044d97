package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Conversations (docs/user-guide.md, docs/protocol.md §11). Every
// conversation, direct or group, is an MLS group. Its creator adds the
// others with the last-resort KeyPackages of their KT records and seals
// the Welcome to each one's intro mailbox; every member then creates a
// mailbox of its own for the conversation (paid with a token, on the
// conversation's own connection) and announces it inside MLS, so intro
// mailboxes carry only first contacts. Messages are encrypted once and
// sealed to each other member's mailbox. Only the creator commits (adds,
// removes), which keeps the members' views of the epochs in one order;
// a member who leaves asks the creator to remove it.

// convRecord is one conversation's local state.
type convRecord struct {
	ID      []byte
	Kind    content.ConvKind
	Name    string // groups
	Peer    string // direct chats
	Creator string
	// Group is the current group state (mls.Group.Marshal). It is not in
	// the record: it is stored in two parts beside it, its base and its
	// ratchets (convstore.go, docs/adr/0044-ratchets-apart.md).
	// LegacyGroup held it in the record before; it is read into Group.
	Group       []byte `json:"-"`
	LegacyGroup []byte `json:"Group,omitempty"`
	Mailbox     *mailboxRecord
	Members     map[string]*memberRecord // other members, by handle
	MySeq       uint64
	// PrevEpoch and PrevUntil are the epoch before the last commit and
	// until when its state is kept (prevEpochKeep), in Chain. Prev held
	// that state before Chain existed; it is read once into Chain.
	Prev      []byte `json:",omitempty"`
	PrevEpoch uint64
	PrevUntil time.Time
	// Accepted: we wrote in this direct chat, so its peer is a contact
	// whose group Welcomes are joined without asking (invites.go).
	Accepted bool `json:",omitempty"`
	// Chain: the past epochs a fork choice may return to, oldest
	// first (commitorder.go); Prev is its newest. Their states are kept
	// apart from the record (convstore.go), under slots numbered by
	// StateNext.
	Chain     []*epochLink `json:",omitempty"`
	StateNext uint64       `json:",omitempty"`
	// SentFrom and SentTo number the content messages we sent in the
	// current epoch, to send again if it is dropped, kept apart from
	// the record (convstore.go); SentNext numbers the next one.
	SentFrom, SentTo, SentNext uint64 `json:",omitempty"`
	// LegacySent held those messages in the record itself before they
	// were kept apart; it is moved out when the record is read.
	LegacySent [][]byte `json:"Sent,omitempty"`
	// ops are the writes beside the record that its next putConv makes.
	ops []convOp
	// Admins: who may add, remove and set the admins (docs/protocol.md
	// §11.6); nil: the creator alone.
	Admins []string `json:",omitempty"`
	// LastUpdate is when we last committed (refreshing our leaf);
	// RecvSinceUpdate counts the messages received since (update.go).
	// MyLeafChanged is when our own leaf last changed.
	LastUpdate      time.Time `json:",omitempty"`
	RecvSinceUpdate int       `json:",omitempty"`
	MyLeafChanged   time.Time `json:",omitempty"`
	// UpdateDue: our scheduled update is to be committed once the
	// mailboxes were read.
	UpdateDue bool `json:",omitempty"`
	// RejoinedFrom: the member whose answer we last rejoined from, until
	// a message of another member decrypts in our epoch
	// (rejoinguard.go).
	RejoinedFrom string `json:",omitempty"`
	Active       bool   // false once removed
	Left         bool   // we asked to leave
	Created      time.Time
	// Traffic is what cover traffic's dummies in this conversation
	// imitate (cover.go).
	Traffic *coverTraffic `json:",omitempty"`
	// Reserve: the generations of our application ratchet that a text
	// may have used before its state was written (reserve.go).
	Reserve *sendReserve `json:",omitempty"`
	// reserveRead is Reserve as read from the local state (nil for a
	// record made in memory): what a crash would leave.
	reserveRead *sendReserve
}

// memberRecord is what we know of another member: its mailbox for this
// conversation and the sequence numbers seen from it.
type memberRecord struct {
	SendID  wire.ID
	Sealing []byte // sealing public key; nil until announced
	LastSeq uint64
	// LastID is the content ID of the message numbered LastSeq: another
	// message under that number is not a duplicate (reserve.go).
	LastID  []byte `json:",omitempty"`
	Missing []uint64
	// Excused: the newest numbers (at most maxExcused) a message that
	// skipped the one before it excused (docs/adr/0045-restart-numbers.md):
	// not reported, still awaited, kept apart from Missing so that a
	// sender's restarts neither grow this record nor push a gap out.
	Excused []uint64 `json:",omitempty"`
	Seen    bool     // a message with a sequence number arrived
	// LeafChanged is when we processed the last commit that changed
	// this member's leaf (its join, or a commit of its own, which
	// carries a path): what `qpc group` shows as its last update.
	LeafChanged time.Time `json:",omitempty"`
	// Unverified: key transparency has not yet shown this member's MLS
	// signature key for its handle. A joiner checks the other members
	// lazily (docs/adr/0041-lazy-member-checks.md): a member's message
	// is read only once its key checks out (checkSender), and until then
	// `qpc group` says the member is not checked. Records from before
	// were all checked at the join (false).
	Unverified bool `json:",omitempty"`
}

// Conversation describes a conversation for listings.
type Conversation struct {
	ID      string
	Group   bool
	Name    string // the group name, or the peer's handle
	Creator string
	// CreatorLeft: the creator is no longer a member; Admins: a group's
	// admins, who decide (groupview.go).
	CreatorLeft bool     `json:",omitempty"`
	Admins      []string `json:",omitempty"`
	Members     []string // including us
	Active      bool
}

func (r *convRecord) display() string {
	if r.Kind == content.ConvDirect {
		return r.Peer
	}
	return r.Name
}

// mlsConfig is the configuration of every group. PaddingBlock 1 leaves
// PrivateMessages unpadded: each is sealed (package sealed) and padded to
// a bucket of the pinned policy before it leaves, so MLS's own padding (to
// 64 bytes by default) hid nothing from the server and cost up to 63
// bytes of every envelope; the recipient, who decrypts, learns the length
// either way (docs/adr/0018-buckets.md).
func (c *Client) mlsConfig(ctx context.Context) *mls.Config {
	return &mls.Config{VerifyMember: c.verifyMember(ctx), Now: c.opts.Now, PaddingBlock: mlsPaddingBlock}
}

// mlsPaddingBlock is mls.Config.PaddingBlock for every group: none.
const mlsPaddingBlock = 1

func (c *Client) loadGroup(ctx context.Context, r *convRecord) (*mls.Group, error) {
	g, err := mls.UnmarshalGroup(r.Group, c.mlsConfig(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: group state: %v", ErrCorruptState, err)
	}
	// After a restart, our ratchet skips what a text sent before its
	// state was written may have used (reserve.go); r.Group follows, for
	// whatever keeps the state as it is stored.
	// Only a direct text leaves early; its number is the record's next.
	var seq uint64
	if r.Kind == content.ConvDirect {
		seq = r.MySeq + 1
	}
	skipped, err := c.floors.apply(r.ID, r.reserveRead, seq, g)
	if err != nil {
		return nil, err
	}
	if skipped {
		if r.Group, err = g.Marshal(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (c *Client) getConv(id []byte) (*convRecord, error) {
	var r convRecord
	err := c.store.View(func(tx *state.Tx) error {
		if err := getJSON(tx, bucketConvs, id, &r); err != nil {
			return err
		}
		return getGroup(tx, &r)
	})
	if errors.Is(err, state.ErrNoEntry) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	upgradeChain(&r)
	migrateChain(&r)
	r.reserveRead = r.Reserve
	return &r, nil
}

func (c *Client) allConvs() ([]*convRecord, error) {
	var out []*convRecord
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEach(bucketConvs, func(_, v []byte) error {
			r := new(convRecord)
			if err := jsonUnmarshal(v, r); err != nil {
				return err
			}
			if err := getGroup(tx, r); err != nil {
				return err
			}
			upgradeChain(r)
			migrateChain(r)
			r.reserveRead = r.Reserve
			out = append(out, r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *convRecord) int { return a.Created.Compare(b.Created) })
	return out, err
}

// Conversations lists the conversations, oldest first.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	c.op.Lock()
	defer c.op.Unlock()
	convs, err := c.allConvs()
	if err != nil {
		return nil, err
	}
	var out []Conversation
	for _, r := range convs {
		conv := Conversation{ID: hex.EncodeToString(r.ID), Group: r.Kind == content.ConvGroup, Name: r.display(), Creator: r.Creator, Active: r.Active}
		if g, err := c.loadGroup(ctx, r); err == nil {
			for _, m := range g.Members() {
				conv.Members = append(conv.Members, string(m.Credential.Identity))
			}
			slices.Sort(conv.Members)
			conv.Admins, conv.CreatorLeft = authority(r, memberSet(g))
		}
		out = append(out, conv)
	}
	return out, nil
}

// startConv creates a conversation with handles as its first other
// members and queues their Welcomes.
func (c *Client) startConv(ctx context.Context, kind content.ConvKind, name string, handles []string, opts *mls.CreateOptions) (*convRecord, error) {
	if c.prof.Handle == "" {
		return nil, ErrNotRegistered
	}
	var contacts []*Contact
	for _, h := range handles {
		if h == c.prof.Handle {
			return nil, fmt.Errorf("you are a member of your own groups already")
		}
		ct, err := c.ensureContact(ctx, h, 10*time.Minute)
		if err != nil {
			return nil, err
		}
		contacts = append(contacts, ct)
	}
	g, err := mls.Create(c.mlsIdentity(), c.mlsConfig(ctx), opts)
	if err != nil {
		return nil, err
	}
	now := c.opts.Now()
	r := &convRecord{ID: g.GroupID(), Kind: kind, Name: name, Creator: c.prof.Handle, Members: map[string]*memberRecord{}, Active: true, Created: now, LastUpdate: now, MyLeafChanged: now}
	if kind == content.ConvDirect {
		r.Peer = handles[0]
	} else {
		r.Admins = []string{c.prof.Handle}
	}
	// The mailbox before the one-time KeyPackages: each fetch costs a
	// token, and a big group's fetches could empty the wallet (a fetch
	// without a token falls back to the last-resort KeyPackage) and
	// leave none for the mailbox, failing the whole creation.
	if r.Mailbox, err = c.convMailbox(ctx, r); err != nil {
		return nil, fmt.Errorf("creating the conversation's mailbox: %w", err)
	}
	var kps []*mls.KeyPackage
	for _, ct := range contacts {
		kp, err := c.contactKeyPackage(ctx, ct)
		if err != nil {
			return nil, err
		}
		kps = append(kps, kp)
	}
	res, err := g.Add(kps...)
	if err != nil {
		return nil, fmt.Errorf("adding %s: %w", strings.Join(handles, ", "), err)
	}
	for _, h := range handles {
		r.Members[h] = &memberRecord{LeafChanged: now}
	}
	if err := c.saveGroup(r, g); err != nil {
		return nil, err
	}
	// Each member gets the Welcome cut down to its own group secrets
	// (mls.WelcomeFor): about half the bytes and tokens of the whole
	// Welcome in a big group (TestWelcomeCost).
	intros := make([][]byte, len(contacts))
	for i := range contacts {
		ref, err := kps[i].Ref()
		if err != nil {
			return nil, err
		}
		w, err := mls.WelcomeFor(res.Welcome, ref)
		if err != nil {
			return nil, fmt.Errorf("the Welcome for %s: %w", contacts[i].Handle, err)
		}
		if intros[i], err = c.intro(r, w); err != nil {
			return nil, err
		}
	}
	err = c.store.Update(func(tx *state.Tx) error {
		for i, ct := range contacts {
			if err := c.enqueueContent(tx, &outboxEntry{Conv: r.ID, To: ct.Handle, Intro: true, SendID: ct.IntroSendID, Sealing: ct.IntroKey, Type: sealed.ContentMLSWelcome, Payload: intros[i]}); err != nil {
				return err
			}
		}
		return putConv(tx, r)
	})
	return r, err
}

// intro builds the Intro for a Welcome: the conversation and the mailboxes
// of the members we know, ourselves first.
func (c *Client) intro(r *convRecord, welcome []byte) ([]byte, error) {
	sk, err := sealed.ParseMailboxPrivateKey(r.Mailbox.Sealing)
	if err != nil {
		return nil, fmt.Errorf("%w: mailbox key", ErrCorruptState)
	}
	in := &content.Intro{ConvKind: r.Kind, Name: r.Name, Welcome: welcome, Checkpoint: c.checkpoint()}
	if r.Kind == content.ConvGroup && r.Admins != nil {
		in.Admins = r.Admins
	}
	in.Roster = append(in.Roster, content.Member{Handle: c.prof.Handle, SendID: r.Mailbox.SendID, SealingKey: sk.Public().Bytes()})
	for _, h := range sortedKeys(r.Members) {
		if m := r.Members[h]; m.Sealing != nil {
			in.Roster = append(in.Roster, content.Member{Handle: h, SendID: m.SendID, SealingKey: m.Sealing})
		}
	}
	return in.Marshal()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// pickKeyPackage returns a contact's last-resort KeyPackage that is valid
// now and signed by one of its KT device keys.
func (c *Client) pickKeyPackage(ct *Contact) (*mls.KeyPackage, error) {
	for _, raw := range ct.KeyPackages {
		if kp, err := c.validKeyPackage(ct, raw); err == nil {
			return kp, nil
		}
	}
	return nil, fmt.Errorf("%s has published no usable key package (they should run `qpc login` to renew it)", ct.Handle)
}

// prevEpochKeep is how long the previous epoch's state is kept after a
// commit: long enough for a member's outbox, written before it saw the
// commit, to arrive; bounded, because it holds keys forward secrecy would
// otherwise have erased.
const prevEpochKeep = 7 * 24 * time.Hour

func (c *Client) saveGroup(r *convRecord, g *mls.Group) error {
	raw, err := g.Marshal()
	if err != nil {
		return err
	}
	r.Group = raw
	r.Reserve = reserveFor(g) // reserve.go
	c.noteEpoch(r.ID, g)      // deferred.go
	return nil
}

// checkpoint is the newest verified KT checkpoint, gossiped in content.
func (c *Client) checkpoint() []byte {
	if cp := c.v.Latest(); cp != nil {
		return cp.Raw
	}
	return nil
}

// CreateGroup creates a group named name with the given members.
func (c *Client) CreateGroup(ctx context.Context, name string, handles []string) error {
	c.op.Lock()
	defer c.op.Unlock()
	if err := checkGroupName(name); err != nil {
		return err
	}
	if r, _ := c.findConv("#" + name); r != nil {
		return fmt.Errorf("you already have a group named %s", name)
	}
	if len(handles) == 0 {
		return fmt.Errorf("a group needs at least one other member")
	}
	if len(dedupe(handles)) >= MaxGroupMembers {
		return fmt.Errorf("a group has at most %d members", MaxGroupMembers)
	}
	if _, err := c.startConv(ctx, content.ConvGroup, name, dedupe(handles), nil); err != nil {
		return err
	}
	return c.flush(ctx)
}

func dedupe(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// AddMember adds handle to a group of which the user is an admin.
func (c *Client) AddMember(ctx context.Context, group, handle string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, g, err := c.ownGroup(ctx, group)
	if err != nil {
		return err
	}
	if _, ok := r.Members[handle]; ok || handle == c.prof.Handle {
		return fmt.Errorf("%s is already a member", handle)
	}
	if len(r.Members)+1 >= MaxGroupMembers {
		return fmt.Errorf("%s has %d members, the most a group may have", r.display(), MaxGroupMembers)
	}
	ct, err := c.ensureContact(ctx, handle, 10*time.Minute)
	if err != nil {
		return err
	}
	kp, err := c.contactKeyPackage(ctx, ct)
	if err != nil {
		return err
	}
	res, existing, err := c.commitIn(r, g, &commitIntent{Kind: intentAdd, Handle: handle}, []*mls.KeyPackage{kp})
	if err != nil {
		return err
	}
	intro, err := c.intro(r, res.Welcome)
	if err != nil {
		return err
	}
	r.Members[handle] = &memberRecord{LeafChanged: c.opts.Now()}
	if err := c.saveGroup(r, g); err != nil {
		return err
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, existing, sealed.ContentMLS, res.Commit); err != nil {
			return err
		}
		if err := c.enqueueContent(tx, &outboxEntry{Conv: r.ID, To: handle, Intro: true, SendID: ct.IntroSendID, Sealing: ct.IntroKey, Type: sealed.ContentMLSWelcome, Payload: intro}); err != nil {
			return err
		}
		c.history(tx, r, Event{Kind: EventMemberAdded, From: handle, Text: handle + " was added"})
		return putConv(tx, r)
	})
	if err != nil {
		return err
	}
	return c.flush(ctx)
}

// RemoveMember removes handle from a group of which the user is an
// admin; the removed
// member gets the commit that tells it so and no later message.
func (c *Client) RemoveMember(ctx context.Context, group, handle string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, g, err := c.ownGroup(ctx, group)
	if err != nil {
		return err
	}
	if err := c.removeMember(ctx, r, g, handle); err != nil {
		return err
	}
	return c.flush(ctx)
}

func (c *Client) removeMember(ctx context.Context, r *convRecord, g *mls.Group, handle string) error {
	if _, ok := r.Members[handle]; !ok {
		return fmt.Errorf("%s is not a member of %s", handle, r.display())
	}
	res, all, err := c.commitIn(r, g, &commitIntent{Kind: intentRemove, Handle: handle}, nil) // all: the removed member included
	if err != nil {
		return err
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, all, sealed.ContentMLS, res.Commit); err != nil {
			return err
		}
		delete(r.Members, handle)
		c.history(tx, r, Event{Kind: EventMemberRemoved, From: handle, Text: handle + " was removed"})
		return putConv(tx, r)
	})
	return err
}

// readmitted reports whether g, joined from a Welcome, re-adds us to r, a
// conversation we were removed from: g is at a later epoch than the state
// we kept, so an old Welcome replayed cannot bring back a past epoch. The
// commit that removed us may still be unread (the intro mailbox is read
// first), so r may look active. The join then replaces r; its history
// stays. The state a removal left cannot be loaded (our leaf is gone
// from its tree); the epoch we were removed in is then r.PrevEpoch.
func (c *Client) readmitted(ctx context.Context, r *convRecord, g *mls.Group) bool {
	if !r.Active {
		return g.Epoch() > r.PrevEpoch
	}
	old, err := c.loadGroup(ctx, r)
	return err == nil && g.Epoch() > old.Epoch()
}

// commitExactly commits the adds and removes given, by value, and nothing
// else: proposals other members sent are never committed (docs/protocol.md
// §11.5), so a Remove one of them proposed cannot ride inside our commit.
// It then checks that the members changed by exactly added and removed
// (handles), which the history records; any other change fails the
// commit, and g must then be dropped.
func commitExactly(g *mls.Group, add []*mls.KeyPackage, remove []uint32, added, removed []string, base *mls.CommitOptions) (*mls.CommitResult, error) {
	before := memberSet(g)
	o := &mls.CommitOptions{SkipPending: true, AuthenticatedData: base.AuthenticatedData}
	for _, kp := range add {
		o.Proposals = append(o.Proposals, &mls.Proposal{Type: mls.ProposalTypeAdd, Add: &mls.Add{KeyPackage: *kp}})
	}
	for _, l := range remove {
		o.Proposals = append(o.Proposals, &mls.Proposal{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: l}})
	}
	res, err := g.Commit(o)
	if err != nil {
		return nil, err
	}
	after := memberSet(g)
	var gotAdded, gotRemoved []string
	for h := range after {
		if !before[h] {
			gotAdded = append(gotAdded, h)
		}
	}
	for h := range before {
		if !after[h] {
			gotRemoved = append(gotRemoved, h)
		}
	}
	if !sameSet(gotAdded, added) || !sameSet(gotRemoved, removed) {
		return nil, fmt.Errorf("the commit would add %v and remove %v, not %v and %v: not sent", gotAdded, gotRemoved, added, removed)
	}
	return res, nil
}

// memberSet is the handles of g's members.
func memberSet(g *mls.Group) map[string]bool {
	out := map[string]bool{}
	for _, m := range g.Members() {
		out[string(m.Credential.Identity)] = true
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = dedupe(a), dedupe(b)
	return slices.Equal(a, b)
}

func (c *Client) ownGroup(ctx context.Context, name string) (*convRecord, *mls.Group, error) {
	r, err := c.findGroup(name)
	if err != nil {
		return nil, nil, err
	}
	if r.Kind != content.ConvGroup {
		return nil, nil, fmt.Errorf("%s is a direct chat, not a group", name)
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	return r, g, nil
}

// Leave asks the group's admins to remove us; the conversation stops
// sending at once. The only admin of a group hands the role on first.
func (c *Client) Leave(ctx context.Context, group string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.findGroup(group)
	if err != nil {
		return err
	}
	if r.Kind != content.ConvGroup {
		return fmt.Errorf("%s is a direct chat, not a group", group)
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return err
	}
	if members := memberSet(g); slices.Equal(admins(r, r.Admins, members), []string{c.prof.Handle}) && len(members) > 1 {
		return fmt.Errorf("you are the only admin of %s: hand the role on first (qpc group admins %s <handle>)", group, r.Name)
	}
	if err := c.sendContent(ctx, r, &content.Message{Kind: content.KindLeave}); err != nil {
		return err
	}
	r.Left = true
	if err := c.store.Update(func(tx *state.Tx) error { return putConv(tx, r) }); err != nil {
		return err
	}
	return c.flush(ctx)
}

// Send sends text to a group ("#name", or its ID) or to a contact (by
// handle; a bare handle never names a group, see names.go),
// starting the direct chat with them on first use. It returns once the
// message is in the outbox and one attempt to deliver it was made; a
// message that could not be delivered yet stays queued (Pending) and goes
// out with the next operation.
func (c *Client) Send(ctx context.Context, target, text string) error {
	_, err := c.SendText(ctx, target, text)
	return err
}

// SendText is Send that also returns the message's hex content ID: the ID
// that History (Event.ID) and receipts (Event.IDs of an EventReceipt) name
// it by, so that a front end can show what receipts say of it. The ID is
// set whenever the message was recorded, even if err is not nil (then err
// is about its delivery and usually wraps ErrQueued); it is "" when nothing
// was recorded.
func (c *Client) SendText(ctx context.Context, target, text string) (id string, err error) {
	start := time.Now()
	c.op.Lock()
	defer c.op.Unlock()
	if text == "" || len(text) > content.MaxText {
		return "", fmt.Errorf("a message is 1-%d bytes", content.MaxText)
	}
	r, err := c.findConv(target)
	if errors.Is(err, ErrNoSuchConv) && content.ValidHandle(target) == nil {
		// A bare handle: the person's, never a group's (names.go).
		r, err = c.startConv(ctx, content.ConvDirect, "", []string{target}, nil)
		if errors.Is(err, ErrNoSuchUser) {
			if hint := c.groupNameTaken(target); hint != nil {
				err = fmt.Errorf("%w (%w)", err, hint)
			}
		}
	}
	if err != nil {
		return "", err
	}
	if !r.Active || r.Left {
		return "", ErrInactive
	}
	c.timed(TimeSendLock, start)
	if r.Kind == content.ConvDirect {
		r.Accepted = true // stored with the message
	}
	m := &content.Message{Kind: content.KindText, Text: text}
	if _, err := c.queueContent(ctx, r, m, true); err != nil {
		return "", err
	}
	return hex.EncodeToString(m.ID[:]), c.flush(ctx)
}

// sendContent encrypts m once in r's group and queues it for every other
// member, persisting the advanced group state and the outbox together.
func (c *Client) sendContent(ctx context.Context, r *convRecord, m *content.Message) error {
	_, err := c.queueContent(ctx, r, m, false)
	return err
}

// queueContent is sendContent that, if early is set and the text may
// leave before its transaction is written (reserve.go, earlyEntry), sends
// it while the transaction is written and returns once both are done;
// sent reports that it went out (it is retiring, flush skips it).
func (c *Client) queueContent(ctx context.Context, r *convRecord, m *content.Message, early bool) (sent bool, err error) {
	start := time.Now()
	stored := r.reserveRead // as on disk
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return false, err
	}
	epoch, auth := g.Epoch(), g.EpochAuthenticator()
	gen, genErr := g.NextSendGeneration()
	ct, err := c.encryptIn(g, r, m)
	if err != nil {
		return false, err
	}
	if err := c.saveGroup(r, g); err != nil {
		return false, err
	}
	c.timed(TimeSendMLS, start)
	start = time.Now()
	// The entries' tokens are taken now and recorded with them, so that
	// one transaction (one fsync) makes the message, its outbox entries
	// and their tokens durable (outbox.go, tokenTake). In cover mode the
	// schedule assigns them when it sends (cover.go).
	// Tokens left over from entries that went out on a connection's
	// allowance (spare.go) are used first.
	cover := c.coverMode() != nil
	var take *tokenTake
	if !cover {
		take = c.takeTokensFor(ctx, len(r.Members)-c.spareCount())
	}
	var pre *outboxEntry
	var conn *protocol.Conn
	// A message that skipped the number before it (encryptIn, ADR 0045)
	// never leaves early: its own number must be on disk first, or a
	// crash in its window makes the next message skip to it again, and a
	// server that withholds that one hides it. After a restart the ratchet
	// floor alone does not keep it from leaving early: a commit since
	// stored a reservation of the new epoch, which covers it
	// (TestHostileWithheldAfterTwoRestarts).
	if early && !m.SkippedBefore && !cover && genErr == nil && stored.covers(epoch, gen) && (take != nil || c.spareCount() > 0) {
		pre, conn = c.earlyEntry(r, ct, m.Kind)
	}
	var assigned []uint64
	var seq uint64
	oldest := c.spareOldest()
	// update: the sent entries of earlier texts are deleted in this
	// transaction too (retire.go).
	queue := func() error {
		defer c.timed(TimeSendQueue, start)
		return c.update(func(tx *state.Tx) error {
			if pre != nil {
				var err error
				if seq, err = c.enqueueAt(tx, pre); err != nil {
					return err
				}
			} else if err := c.fanOutAs(tx, r, sortedKeys(r.Members), sealed.ContentMLS, ct, m.Kind); err != nil {
				return err
			}
			if !cover {
				need, err := untokened(tx)
				if err != nil {
					return err
				}
				if assigned, err = assignAll(tx, take, need, oldest); err != nil {
					return err
				}
			}
			if m.Kind == content.KindText {
				c.history(tx, r, Event{Kind: EventMessage, From: c.prof.Handle, Text: m.Text, Seq: m.Seq, SentAt: time.Unix(int64(m.SentAt), 0), ID: hex.EncodeToString(m.ID[:])})
				if err := sentMessage(tx, m.ID); err != nil {
					return err
				}
			}
			return putConv(tx, r)
		})
	}
	var at time.Time
	var sendErr error
	if pre == nil {
		err = queue()
	} else {
		// The envelope leaves while the transaction is written: the
		// stored reservation covers its generation, and it shows no
		// token (reserve.go).
		written := make(chan error, 1)
		go func() { written <- queue() }()
		at, sent, sendErr = c.sendEarly(ctx, conn, pre, start)
		err = <-written
		if err != nil {
			// The envelope may be out with a generation the state on
			// disk still names as the next: never use it again.
			c.floors.raise(r.ID, &sendReserve{Epoch: epoch, Gen: gen + 1}, auth)
			c.floors.usedSeq(r.ID, m.Seq) // and its number
		}
	}
	if take != nil {
		err = take.done(err)
	}
	if err != nil {
		return false, err
	}
	c.unshown.add(assigned...)
	if pre != nil && sent {
		if err := c.sentEntry(seq, pre, at, sendErr); err != nil {
			return false, err
		}
		c.retireLater([]uint64{seq}, map[uint64]bool{seq: c.unshown.free(seq)})
	}
	return sent, nil
}

// earlyEntry is the outbox entry of ct if it may leave before its
// transaction is written, with the connection it leaves on; nil when it
// goes by flush: not a direct chat whose peer announced its mailbox,
// something else waiting in the outbox (entries leave in order), too
// long for one envelope, or no connection open.
func (c *Client) earlyEntry(r *convRecord, ct []byte, kind content.Kind) (*outboxEntry, *protocol.Conn) {
	if r.Kind != content.ConvDirect || len(r.Members) != 1 || len(ct) > c.maxContent() {
		return nil, nil
	}
	var to string
	var mr *memberRecord
	for h, m := range r.Members {
		to, mr = h, m
	}
	if mr == nil || mr.Sealing == nil {
		return nil, nil
	}
	if n, cover, err := c.outboxCount(); err != nil || n+cover > 0 {
		return nil, nil
	}
	conn := c.cachedConn(connForConv(r.ID))
	if conn == nil {
		return nil, nil
	}
	e := &outboxEntry{Conv: r.ID, To: to, Type: sealed.ContentMLS, Payload: ct, Kind: kind, SendID: mr.SendID, Sealing: mr.Sealing}
	e.ID = protocol.NewMessageID()
	e.Queued = c.opts.Now()
	return e, conn
}

// sendEarly seals e and sends it on conn's allowance (never a token:
// reserve.go). sent reports that the server stored it; at is when the
// request went out.
func (c *Client) sendEarly(ctx context.Context, conn *protocol.Conn, e *outboxEntry, prep time.Time) (at time.Time, sent bool, err error) {
	start := time.Now()
	to, err := sealed.ParseMailboxPublicKey(e.Sealing)
	if err != nil {
		return at, false, err
	}
	policy, err := sealed.PlaintextPolicy(c.connPolicy(conn), tokens.TokenSize)
	if err != nil {
		return at, false, err
	}
	env, err := sealed.Seal(policy, to, e.SendID, sealed.SenderIdentity{Key: c.prof.IdentityKey, Handle: c.prof.Handle}, e.Type, e.Payload, c.opts.Now())
	if err != nil {
		return at, false, err
	}
	c.timed(TimeSendSeal, start)
	c.timed(TimeSendPrep, prep)
	start = time.Now()
	at = c.opts.Now()
	sent, _, err = conn.SendAllowed(ctx, e.SendID, e.ID, env)
	c.timed(TimeSendWire, start)
	return at, sent && err == nil, err
}

// fanOut queues payload for each of the given members of r.
func (c *Client) fanOut(tx *state.Tx, r *convRecord, to []string, typ sealed.ContentType, payload []byte) error {
	return c.fanOutAs(tx, r, to, typ, payload, 0)
}

// fanOutAs is fanOut for a content message of kind (0: a handshake
// message), marking the entries as cover traffic's dummies if it is of
// kind cover.
func (c *Client) fanOutAs(tx *state.Tx, r *convRecord, to []string, typ sealed.ContentType, payload []byte, kind content.Kind) error {
	for _, h := range to {
		m := r.Members[h]
		e := &outboxEntry{Conv: r.ID, To: h, Type: typ, Payload: payload, Cover: kind == content.KindCover, Kind: kind}
		if m != nil && m.Sealing != nil {
			e.SendID, e.Sealing = m.SendID, m.Sealing
		}
		if err := c.enqueueContent(tx, e); err != nil {
			return err
		}
	}
	return nil
}

// historyEntry is one line of a conversation's history.
type historyEntry struct {
	Conv  []byte
	Event Event
}

// history appends an event to the local history (and to the events the
// running operation returns).
func (c *Client) history(tx *state.Tx, r *convRecord, e Event) {
	e.Conv, e.ConvID, e.Group = r.display(), hex.EncodeToString(r.ID), r.Kind == content.ConvGroup
	if e.At.IsZero() {
		e.At = c.opts.Now()
	}
	raw, err := json.Marshal(historyEntry{Conv: r.ID, Event: e})
	if err == nil {
		_, err = tx.Append(bucketHistory, raw)
	}
	if err != nil {
		c.log.Warn("could not record history", "err", err)
	}
	if e.From != c.prof.Handle || e.Kind != EventMessage {
		c.pending = append(c.pending, e)
	}
}

// History returns the events of a conversation (or of all, for ""),
// oldest first, at most limit (0: all) of the newest.
func (c *Client) History(target string, limit int) ([]Event, error) {
	c.op.Lock()
	defer c.op.Unlock()
	var id []byte
	if target != "" {
		r, err := c.resolve(target)
		if err != nil {
			return nil, err
		}
		id = r.ID
	}
	var out []Event
	err := c.store.View(func(tx *state.Tx) error {
		err := tx.ForEachSeq(bucketHistory, 0, func(_ uint64, v []byte) error {
			var h historyEntry
			if err := jsonUnmarshal(v, &h); err != nil {
				return err
			}
			if id == nil || string(h.Conv) == string(id) {
				out = append(out, h.Event)
			}
			return nil
		})
		c.annotate(tx, out)
		return err
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}
