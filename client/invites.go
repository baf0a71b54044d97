package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
)

// Invitations (docs/user-guide.md, "Invitations"). A Welcome to a group
// is joined at once only when its creator is a contact: a user the user
// added (AddContact, `qpc contact add`) or one the user writes to in a
// direct chat (the user started it, or sent a message in it). Any other
// group Welcome waits as an invitation until the user accepts or declines
// it; nothing of it is processed before (no MLS, no key-transparency
// lookup, no mailbox, no token), and the invitations kept are bounded in
// number, in bytes and in time. A direct chat's Welcome is joined at once
// from anyone: it has exactly two members, its sender and us, and it is
// named by its sender's key-transparency handle, so it takes no name. A
// stranger gets one such chat at a time: another Welcome for a direct
// chat from them is dropped until the user writes in the first (each
// joined costs a mailbox and an envelope).
//
// Whatever the consent, a Welcome is bounded before any costly work:
// MaxWelcomeBytes before it is opened, a tree at most maxTreeLeaves wide
// before the tree is hashed (mls.Config.MaxLeaves), the creator (leaf 0)
// checked to be the envelope's sender before any other member is looked
// up in key transparency, and at most MaxGroupMembers members looked up.

// Limits of a Welcome and of the invitations kept.
const (
	// MaxGroupMembers is the most members a group has, the creator
	// included: this client neither creates nor joins a larger one.
	MaxGroupMembers = 1000
	// maxTreeLeaves bounds a joined group's ratchet tree width: the
	// member bound rounded up to a power of two (trees double).
	maxTreeLeaves = 1024
	// MaxWelcomeBytes bounds the MLS Welcome of an Intro. A Welcome of a
	// group of MaxGroupMembers members is about 200-450 KB (a leaf and
	// its parent node are some 200 bytes, one encrypted group secrets per
	// added member some 150).
	MaxWelcomeBytes = 512 << 10
	// introOverhead bounds the rest of an Intro: a full roster (some 90
	// bytes a member) and a checkpoint (under 64 KiB).
	introOverhead = 192 << 10
	// maxInvites and maxInviteBytes bound the invitations kept (the
	// early messages that came with them included), maxInvitesPerSender
	// those of one sender; one over is dropped with an alarm, and the
	// kept ones stay: a flood cannot push out an invitation waiting.
	maxInvites          = 32
	maxInvitesPerSender = 4
	maxInviteBytes      = 4 << 20
	// maxInviteEarly bounds the conversation messages kept with an
	// invitation: those its sender wrote before we announced a mailbox,
	// which follow the Welcome into the intro mailbox.
	maxInviteEarly = 16
	// inviteKeep is how long an invitation waits.
	inviteKeep = 14 * 24 * time.Hour
)

const bucketInvites = "invites"

// ErrNoSuchInvite reports an invitation ID that names none waiting.
var ErrNoSuchInvite = errors.New("no such invitation")

// inviteRecord is a waiting invitation: the Intro as received, unopened.
type inviteRecord struct {
	ID       string
	From     string
	FromKey  ed25519.PublicKey // the identity key that sealed it
	Kind     content.ConvKind
	Name     string // as sent; shown through safetext
	Intro    []byte
	Received time.Time
	Expires  time.Time
	Early    []earlyMessage `json:",omitempty"`
}

// earlyMessage is a conversation message that came with an invitation.
type earlyMessage struct {
	SenderKey ed25519.PublicKey
	Timestamp time.Time
	Content   []byte // an MLSMessage
}

func (r *inviteRecord) size() int {
	n := len(r.Intro)
	for _, e := range r.Early {
		n += len(e.Content)
	}
	return n
}

// Invitation is a group invitation waiting for the user's answer.
type Invitation struct {
	ID       string    `json:"id"`   // for AcceptInvite and DeclineInvite
	From     string    `json:"from"` // the sender, as key transparency showed it
	Group    bool      `json:"group"`
	Name     string    `json:"name"` // the group's name as sent (show it through safetext)
	Received time.Time `json:"received"`
	Expires  time.Time `json:"expires"`
}

// isContact reports whether a Welcome from handle is joined without
// asking: the user added them, or writes to them in a direct chat.
func (c *Client) isContact(handle string) bool {
	if ct, err := c.contact(handle); err == nil && ct != nil && ct.Added {
		return true
	}
	convs, err := c.allConvs()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(convs, func(r *convRecord) bool {
		return r.Kind == content.ConvDirect && r.Peer == handle && r.Active && (r.Creator == c.prof.Handle || r.Accepted)
	})
}

// hasDirectWith reports whether an active direct chat with handle exists.
func (c *Client) hasDirectWith(handle string) bool {
	convs, err := c.allConvs()
	return err != nil || slices.ContainsFunc(convs, func(r *convRecord) bool {
		return r.Kind == content.ConvDirect && r.Peer == handle && r.Active
	})
}

// introWelcome handles a verified Intro from a sender: bounded, then
// joined at once or kept as an invitation.
func (c *Client) introWelcome(ctx context.Context, from *Contact, in *content.Intro, raw []byte) (func(*state.Tx) error, error) {
	if len(in.Welcome) > MaxWelcomeBytes {
		return nil, fmt.Errorf("a welcome from %s of %d bytes, more than %d", from.Handle, len(in.Welcome), MaxWelcomeBytes)
	}
	contact := c.isContact(from.Handle)
	if in.ConvKind == content.ConvDirect && !contact && c.hasDirectWith(from.Handle) {
		// One unanswered direct chat per stranger: each joined costs a
		// mailbox and an envelope (a token each), and a stranger has
		// our last-resort KeyPackage to start as many as they like.
		return nil, fmt.Errorf("another direct chat from %s was dropped: answer the first one (write to %s) to accept more", from.Handle, from.Handle)
	}
	if in.ConvKind == content.ConvDirect || contact {
		commit, _, err := c.joinIntro(ctx, from, in)
		return commit, err
	}
	return c.keepInvite(from, in, raw)
}

// introChunkBound refuses a chunk in the intro mailbox whose set is
// larger than any Intro kept (a Welcome bounded by MaxWelcomeBytes, or a
// message that follows one): before it is stored, so a Welcome too big
// costs the chunks' opening and no state. Every chunk but a set's last
// is full (padding.Split), so a chunk that is not the last shows the
// set's least size.
func introChunkBound(ch []byte) error {
	if len(ch) < padding.ChunkHeaderSize {
		return nil // addChunk refuses it
	}
	index, count := int(binary.BigEndian.Uint16(ch[8:10])), int(binary.BigEndian.Uint16(ch[10:12]))
	if index+1 < count {
		if least := (count - 1) * (len(ch) - padding.ChunkHeaderSize); least > MaxWelcomeBytes+introOverhead+chunkTypeSize {
			return fmt.Errorf("a chunked intro of at least %d bytes, more than %d", least, MaxWelcomeBytes+introOverhead)
		}
	}
	return nil
}

// invites returns the invitations stored, expired ones included.
func (c *Client) invites() ([]*inviteRecord, error) {
	var out []*inviteRecord
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEach(bucketInvites, func(_, v []byte) error {
			r := new(inviteRecord)
			if err := jsonUnmarshal(v, r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *inviteRecord) int { return a.Received.Compare(b.Received) })
	return out, err
}

// dropExpired deletes the expired invitations of all in tx and returns
// the others.
func (c *Client) dropExpired(tx *state.Tx, all []*inviteRecord) ([]*inviteRecord, error) {
	now := c.opts.Now()
	var live []*inviteRecord
	for _, r := range all {
		if now.Before(r.Expires) {
			live = append(live, r)
			continue
		}
		if err := tx.Delete(bucketInvites, []byte(r.ID)); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// keepInvite stores a group Welcome as an invitation, within the bounds.
func (c *Client) keepInvite(from *Contact, in *content.Intro, raw []byte) (func(*state.Tx) error, error) {
	all, err := c.invites()
	if err != nil {
		return nil, err
	}
	now := c.opts.Now()
	total, fromSender := len(raw), 0
	var live []*inviteRecord
	for _, r := range all {
		if now.Before(r.Expires) {
			live = append(live, r)
			total += r.size()
			if r.From == from.Handle {
				fromSender++
			}
		}
	}
	if len(live) >= maxInvites || total > maxInviteBytes || fromSender >= maxInvitesPerSender {
		return nil, fmt.Errorf("an invitation from %s was dropped: too many are waiting (qpc invites lists them, qpc decline drops one)", from.Handle)
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	r := &inviteRecord{ID: hex.EncodeToString(id[:]), From: from.Handle, FromKey: from.IdentityKey, Kind: in.ConvKind, Name: in.Name,
		Intro: bytes.Clone(raw), Received: now, Expires: now.Add(inviteKeep)}
	return func(tx *state.Tx) error {
		if _, err := c.dropExpired(tx, all); err != nil {
			return err
		}
		c.pending = append(c.pending, Event{Kind: EventInvited, Conv: r.Name, Group: true, From: r.From, ID: r.ID, At: now,
			Text: fmt.Sprintf("%s invites you to this group: qpc accept %s, or qpc decline %s", r.From, r.ID, r.ID)})
		return putJSON(tx, bucketInvites, []byte(r.ID), r)
	}, nil
}

// keepEarly keeps a conversation message from the intro mailbox with the
// waiting invitations of its sender; ok is false when there are none.
func (c *Client) keepEarly(op *sealed.Opened) (commit func(*state.Tx) error, ok bool, err error) {
	all, err := c.invites()
	if err != nil {
		return nil, true, err
	}
	now := c.opts.Now()
	total := len(op.Content)
	var mine []*inviteRecord
	for _, r := range all {
		if !now.Before(r.Expires) {
			continue
		}
		total += r.size()
		if r.From == op.Sender.Handle && r.FromKey.Equal(op.Sender.IdentityKey) {
			mine = append(mine, r)
		}
	}
	if len(mine) == 0 {
		return nil, false, nil
	}
	if total+len(op.Content)*(len(mine)-1) > maxInviteBytes || slices.ContainsFunc(mine, func(r *inviteRecord) bool { return len(r.Early) >= maxInviteEarly }) {
		return nil, true, fmt.Errorf("a message from %s that came with an invitation was dropped: too many are waiting", op.Sender.Handle)
	}
	for _, r := range mine {
		r.Early = append(r.Early, earlyMessage{SenderKey: op.Sender.IdentityKey, Timestamp: op.Timestamp, Content: bytes.Clone(op.Content)})
	}
	return func(tx *state.Tx) error {
		for _, r := range mine {
			if err := putJSON(tx, bucketInvites, []byte(r.ID), r); err != nil {
				return err
			}
		}
		return nil
	}, true, nil
}

// Invitations lists the group invitations waiting, oldest first.
func (c *Client) Invitations() ([]Invitation, error) {
	c.op.Lock()
	defer c.op.Unlock()
	all, err := c.invites()
	if err != nil {
		return nil, err
	}
	var live []*inviteRecord
	if err := c.store.Update(func(tx *state.Tx) error {
		live, err = c.dropExpired(tx, all)
		return err
	}); err != nil {
		return nil, err
	}
	out := []Invitation{}
	for _, r := range live {
		out = append(out, Invitation{ID: r.ID, From: r.From, Group: r.Kind == content.ConvGroup, Name: r.Name, Received: r.Received, Expires: r.Expires})
	}
	return out, nil
}

// invite returns the waiting invitation id, or ErrNoSuchInvite.
func (c *Client) invite(id string) (*inviteRecord, error) {
	var r inviteRecord
	err := c.store.View(func(tx *state.Tx) error { return getJSON(tx, bucketInvites, []byte(id), &r) })
	if errors.Is(err, state.ErrNoEntry) || err == nil && !c.opts.Now().Before(r.Expires) {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchInvite, id)
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// DeclineInvite drops a waiting invitation; its sender is not told.
func (c *Client) DeclineInvite(id string) error {
	c.op.Lock()
	defer c.op.Unlock()
	if _, err := c.invite(id); err != nil {
		return err
	}
	return c.store.Update(func(tx *state.Tx) error { return tx.Delete(bucketInvites, []byte(id)) })
}

// AcceptInvite joins the group of a waiting invitation: the Welcome is
// checked and joined as one from a contact would have been, the messages
// that came with it are read, and our mailbox is announced to the
// members. An invitation whose Welcome cannot be joined is dropped; the
// error says why.
func (c *Client) AcceptInvite(ctx context.Context, id string) error {
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return ErrNotRegistered
	}
	rec, err := c.invite(id)
	if err != nil {
		return err
	}
	drop := func(err error) error {
		if derr := c.store.Update(func(tx *state.Tx) error { return tx.Delete(bucketInvites, []byte(id)) }); derr != nil {
			return derr
		}
		return fmt.Errorf("the invitation from %s could not be joined and was dropped: %w", rec.From, err)
	}
	in, err := content.ParseIntro(rec.Intro)
	if err != nil {
		return drop(err)
	}
	from, err := c.ensureContact(ctx, rec.From, time.Hour)
	if err == nil && !from.IdentityKey.Equal(rec.FromKey) {
		from, err = c.lookup(ctx, rec.From, false)
	}
	if err != nil {
		return err
	}
	if !from.IdentityKey.Equal(rec.FromKey) {
		return drop(fmt.Errorf("%s's identity key changed since the invitation came", rec.From))
	}
	commit, gid, err := c.joinIntro(ctx, from, in)
	if errors.Is(err, errDefer) {
		return fmt.Errorf("joining: the conversation's mailbox could not be created; try again")
	}
	if err != nil {
		return drop(err)
	}
	if err := c.store.Update(func(tx *state.Tx) error {
		if err := commit(tx); err != nil {
			return err
		}
		if err := tx.Delete(bucketInvites, []byte(id)); err != nil {
			return err
		}
		return c.putProfile(tx)
	}); err != nil {
		return err
	}
	if c.kpUsed {
		c.kpUsed = false
		c.refillKeyPackagesQuietly(ctx)
	}
	for _, e := range rec.Early {
		var m mls.MLSMessage
		if err := m.Unmarshal(e.Content); err != nil || m.PrivateMessage == nil || !bytes.Equal(m.PrivateMessage.GroupID, gid) {
			continue // another invitation's, from the same sender
		}
		op := &sealed.Opened{Sender: sealed.SenderID{Handle: rec.From, IdentityKey: e.SenderKey}, Timestamp: e.Timestamp, ContentType: sealed.ContentMLS, Content: e.Content}
		commit, err := c.processConv(ctx, gid, op)
		if err == nil {
			err = c.store.Update(func(tx *state.Tx) error {
				if err := commit(tx); err != nil {
					return err
				}
				return c.putProfile(tx)
			})
		}
		if err != nil {
			c.raiseLimited(Alarm{Kind: AlarmDropped, Detail: "a message that came with an invitation could not be read: " + err.Error()})
		}
	}
	return c.flush(ctx)
}

// joinIntro joins the conversation of an Intro from a sender whose key
// transparency binding was checked: bounded (see the top of this file),
// then the group state, the conversation and the announcement of our
// mailbox, to be committed together. It returns the group ID.
func (c *Client) joinIntro(ctx context.Context, from *Contact, in *content.Intro) (func(*state.Tx) error, []byte, error) {
	kpp, oneTime, err := c.welcomeKeyPackage(in.Welcome)
	if err != nil {
		return nil, nil, err
	}
	// Only the sender and we are verified while joining: every other
	// member's key-transparency lookup waits until the tree is known to
	// be small and the sender to be its creator.
	type member struct {
		cred mls.Credential
		key  []byte
	}
	var later []member
	verify := c.verifyMember(ctx)
	cfg := c.mlsConfig(ctx)
	cfg.MaxLeaves = maxTreeLeaves
	cfg.VerifyMember = func(cred mls.Credential, key []byte) error {
		if h := string(cred.Identity); cred.Type == mls.CredentialTypeBasic && (h == from.Handle || h == c.prof.Handle) {
			return verify(cred, key)
		}
		if len(later)+2 >= MaxGroupMembers {
			return fmt.Errorf("more than %d members", MaxGroupMembers)
		}
		later = append(later, member{cred, bytes.Clone(key)})
		return nil
	}
	g, err := mls.Join(in.Welcome, kpp, cfg, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("joining: %w", err)
	}
	members := map[string]bool{}
	var creator string
	for _, m := range g.Members() {
		h := string(m.Credential.Identity)
		members[h] = true
		if m.Leaf == 0 {
			creator = h
		}
	}
	if !members[from.Handle] {
		return nil, nil, fmt.Errorf("a welcome from %s for a group they are not a member of", from.Handle)
	}
	if creator == c.prof.Handle {
		// An add fills the leftmost blank leaf (RFC 9420 §7.7): leaf 0
		// is ours because the creator left. Who created the group is
		// then unknown to us; the admins decide anyway.
		creator = ""
	}
	// A group ID is its creator's choice (RFC 9420 §8.1): a Welcome for
	// the ID of a conversation we have re-admits us only when it comes
	// from that conversation's creator (leaf 0 of the new group), or
	// from one of its admins as we knew them, for the same kind; anyone
	// else (a member removed from it, say) would replace the group in our
	// state with one of theirs. The admins: once the creator has left,
	// leaf 0 is whoever was added next (TestCreatorGoneReAdd).
	if r, err := c.getConv(g.GroupID()); err != nil {
		return nil, nil, err
	} else if r != nil && (r.Creator == "" || r.Creator != creator) && !slices.Contains(r.Admins, from.Handle) || r != nil && r.Kind != in.ConvKind {
		return nil, nil, fmt.Errorf("a welcome from %s for the group ID of %s, which %s created", from.Handle, r.display(), r.Creator)
	} else if r != nil && !c.readmitted(ctx, r, g) {
		return func(*state.Tx) error { return nil }, g.GroupID(), nil // joined already
	} else if r != nil {
		creator = r.Creator // re-added: the group's creator is as we knew it
	}
	if in.ConvKind == content.ConvDirect && (len(members) != 2 || !members[c.prof.Handle]) {
		return nil, nil, fmt.Errorf("a direct chat from %s with %d members", from.Handle, len(members))
	}
	// The other members are not looked up now: each is checked when its
	// first message is to be read (checkSender), on a connection of its
	// own at a time of its own, so that the join neither waits for a
	// lookup per member nor shows the server the group's members looked
	// up in one burst (docs/adr/0041-lazy-member-checks.md). One already
	// known (a contact checked within the hour, with this key) is
	// checked here, without asking the server.
	unverified := map[string]bool{}
	if c.opts.KTMembersAtJoin {
		handles := make([]string, 0, len(later))
		for _, m := range later {
			handles = append(handles, string(m.cred.Identity))
		}
		c.lookupMembers(ctx, handles)
		for _, m := range later {
			if err := verify(m.cred, m.key); err != nil {
				return nil, nil, fmt.Errorf("joining: member %s: %w: %w", m.cred.Identity, mls.ErrMemberRejected, err)
			}
		}
		later = nil
	}
	for _, m := range later {
		if !c.knownMember(m.cred, m.key) {
			unverified[string(m.cred.Identity)] = true
		}
	}
	now := c.opts.Now()
	r := &convRecord{ID: g.GroupID(), Kind: in.ConvKind, Creator: creator, Members: map[string]*memberRecord{}, Active: true, Created: now, LastUpdate: now, MyLeafChanged: now}
	if in.ConvKind == content.ConvGroup {
		// As the member who added us knows them (it is an admin, by
		// the policy every member checks of its commit).
		r.Admins = dedupe(in.Admins)
		if len(in.Admins) == 0 {
			r.Admins = nil
		}
	}
	if r.Kind == content.ConvDirect {
		r.Peer = from.Handle
	} else {
		convs, err := c.allConvs()
		if err != nil {
			return nil, nil, err
		}
		// A re-admitted group replaces its own record: its old name is
		// not another group's.
		convs = slices.DeleteFunc(convs, func(o *convRecord) bool { return bytes.Equal(o.ID, r.ID) })
		r.Name = receivedGroupName(convs, in.Name, creator)
	}
	for h := range members {
		if h != c.prof.Handle {
			r.Members[h] = &memberRecord{LeafChanged: now, Unverified: unverified[h]}
		}
	}
	for _, m := range in.Roster {
		if rec, ok := r.Members[m.Handle]; ok {
			rec.SendID, rec.Sealing = m.SendID, m.SealingKey
		}
	}
	mb, err := c.convMailbox(ctx, r)
	if err != nil {
		return nil, nil, errDefer // try again at the next sync
	}
	r.Mailbox = mb
	c.gossip(ctx, from.Handle, in.Checkpoint)
	// Announce our mailbox to every member, inside the group.
	sk, err := sealed.ParseMailboxPrivateKey(mb.Sealing)
	if err != nil {
		return nil, nil, err
	}
	ann := &content.Message{Kind: content.KindMailbox, Mailbox: &content.MailboxAnnounce{SendID: mb.SendID, SealingKey: sk.Public().Bytes()}}
	ct, err := c.encryptIn(g, r, ann)
	if err != nil {
		return nil, nil, err
	}
	if err := c.saveGroup(r, g); err != nil {
		return nil, nil, err
	}
	text := "you joined " + r.display() + " (created by " + creator + ")"
	if creator == "" {
		text = "you joined " + r.display() + " (its creator has left)"
	}
	if r.Kind == content.ConvDirect {
		text = from.Handle + " started a conversation with you"
	}
	return func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, sortedKeys(r.Members), sealed.ContentMLS, ct); err != nil {
			return err
		}
		c.history(tx, r, Event{Kind: EventJoined, From: from.Handle, Text: text})
		if oneTime != nil {
			// Used once: its private keys go with the join (RFC 9420
			// §16.8).
			if err := tx.Delete(bucketOneTimeKPs, oneTime); err != nil {
				return err
			}
		}
		// Top the pool up after this envelope: one KeyPackage less, or
		// (a Welcome to the last-resort one) none left at all.
		c.kpUsed = true
		return putConv(tx, r)
	}, g.GroupID(), nil
}
