package mls

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Errors of the group lifecycle (RFC 9420 §11, §12). Every error a Group
// method returns wraps exactly one sentinel, so errors.Is tells callers
// what went wrong; on any error the group state is unchanged.
var (
	// ErrInvalidProposals: a commit's proposal list breaks §12.2, or a
	// proposal is invalid on its own (§12.1).
	ErrInvalidProposals = errors.New("mls: invalid proposal list")
	// ErrInvalidCommit: a commit is malformed for its content (missing a
	// required path, by-reference proposals in an external commit...).
	ErrInvalidCommit = errors.New("mls: invalid commit")
	// ErrConfirmationTag: the commit's confirmation tag does not verify,
	// i.e. the committer derived a different epoch (§6.1, §8.2).
	ErrConfirmationTag = errors.New("mls: confirmation tag does not verify")
	// ErrUnknownProposal: a commit references a proposal this member has
	// not seen in the epoch (§12.4).
	ErrUnknownProposal = errors.New("mls: unknown proposal reference")
	// ErrUnknownPSK: a PSK named by a proposal or Welcome is not known.
	ErrUnknownPSK = errors.New("mls: unknown pre-shared key")
	// ErrWelcomeNotForUs: the Welcome has no secrets for this key package.
	ErrWelcomeNotForUs = errors.New("mls: welcome is not for this key package")
	// ErrInvalidWelcome: the Welcome or its GroupInfo does not verify.
	ErrInvalidWelcome = errors.New("mls: invalid welcome")
	// ErrInvalidGroupInfo: a GroupInfo's signature or contents are wrong.
	ErrInvalidGroupInfo = errors.New("mls: invalid group info")
	// ErrTreeTooWide: a Welcome's or GroupInfo's ratchet tree is wider
	// than Config.MaxLeaves.
	ErrTreeTooWide = errors.New("mls: ratchet tree wider than allowed")
	// ErrGroupInactive: this member was removed or the group was
	// reinitialised; it can no longer send or process messages.
	ErrGroupInactive = errors.New("mls: group is no longer active for this member")
	// ErrUnexpectedMessage: a message of a kind the call does not handle
	// (a Welcome passed to ProcessMessage, an unknown sender type...).
	ErrUnexpectedMessage = errors.New("mls: unexpected message")
)

// Config carries the application's policy; it is not part of the stored
// state and is passed again to UnmarshalGroup.
type Config struct {
	// VerifyMember vets every credential and signature key before the
	// group accepts it (see MemberVerifier). Nil accepts all.
	VerifyMember MemberVerifier
	// Now is the clock for key package lifetimes; nil means time.Now.
	Now func() time.Time
	// ExternalPSKs maps psk_id to PSK value (§8.4).
	ExternalPSKs map[string][]byte
	// PaddingBlock pads PrivateMessage content to a multiple of this many
	// bytes (default 64) to hide exact lengths.
	PaddingBlock int
	// PublicHandshake sends proposals and commits as PublicMessage instead
	// of PrivateMessage. PrivateMessage (the default) hides who commits.
	PublicHandshake bool
	// OmitRatchetTree leaves the ratchet_tree extension out of Welcome
	// GroupInfos; joiners must then get the tree another way.
	OmitRatchetTree bool
	// SecretTree bounds out-of-order tolerance (nil: defaults).
	SecretTree *SecretTreeOptions
	// MaxLeaves, if not zero, is the widest ratchet tree a Welcome or a
	// GroupInfo may carry: a wider one is refused before its tree is
	// expanded, hashed or its members verified (the tree is an
	// application's to bound, §7.8 sets no limit of its own).
	MaxLeaves uint32
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// resumptionWindow is how many past epochs' resumption PSKs are kept for
// PSK proposals that refer back (§8.6); older ones are deleted.
const resumptionWindow = 64

type cachedProposal struct {
	ref      []byte
	proposal *Proposal
	sender   Sender
}

type resumptionPSK struct {
	epoch uint64
	psk   []byte
}

// Group is one member's state of an MLS group in one epoch. It is not safe
// for concurrent use. Methods that change the state do so only on success:
// a received commit is applied in full or not at all.
type Group struct {
	suite      *CipherSuite
	cfg        Config
	ctx        GroupContext
	tree       *ratchetTree
	priv       *treePrivate
	sigPriv    []byte
	interim    []byte
	confTag    []byte
	secrets    *EpochSecrets
	secretTree *SecretTree
	proposals  []cachedProposal
	resumption []resumptionPSK
	inactive   bool
}

func (g *Group) clone() *Group {
	c := *g
	c.ctx.Extensions = slices.Clone(g.ctx.Extensions)
	c.tree = g.tree.clone()
	c.priv = g.priv.clone()
	c.secretTree = g.secretTree.clone()
	c.proposals = slices.Clone(g.proposals)
	c.resumption = slices.Clone(g.resumption)
	return &c
}

// GroupID returns the group identifier.
func (g *Group) GroupID() []byte { return slices.Clone(g.ctx.GroupID) }

// Epoch returns the current epoch number.
func (g *Group) Epoch() uint64 { return g.ctx.Epoch }

// CipherSuite returns the group's cipher suite.
func (g *Group) CipherSuite() CipherSuiteID { return g.suite.ID }

// LeafIndex returns this member's leaf index.
func (g *Group) LeafIndex() uint32 { return g.priv.leaf }

// NextSendGeneration is the generation of this member's application
// ratchet (§9.1) that its next Encrypt uses.
func (g *Group) NextSendGeneration() (uint32, error) {
	return g.secretTree.NextGeneration(g.priv.leaf, ApplicationRatchet)
}

// SkipSendTo advances this member's application ratchet so that its next
// Encrypt uses generation or a later one, deleting the keys in between.
// It lets a sender that may have used generations up to generation-1
// without recording it (a crash after sending, before its state was
// written) never use one of them again; receivers reach the next
// generation as they reach any that arrives ahead (§9.2).
func (g *Group) SkipSendTo(generation uint32) error {
	return g.secretTree.SkipTo(g.priv.leaf, ApplicationRatchet, generation)
}

// Active reports whether this member can still use the group.
func (g *Group) Active() bool { return !g.inactive }

// EpochAuthenticator returns the epoch's authentication secret (§8.7):
// members can compare it out of band to confirm they share the epoch.
func (g *Group) EpochAuthenticator() []byte { return slices.Clone(g.secrets.EpochAuthenticator) }

// ExportSecret is MLS-Exporter (§8.5): a secret for the application,
// bound to label and context and to this epoch.
func (g *Group) ExportSecret(label string, context []byte, length int) ([]byte, error) {
	return g.suite.Exporter(g.secrets.ExporterSecret, label, context, length)
}

// Member is one leaf of the tree.
type Member struct {
	Leaf         uint32
	Credential   Credential
	SignatureKey []byte
}

// Members lists the group's members in leaf order.
func (g *Group) Members() []Member {
	var out []Member
	for _, i := range g.tree.members() {
		ln := g.tree.leaf(i)
		out = append(out, Member{Leaf: i, Credential: ln.Credential, SignatureKey: ln.SignatureKey})
	}
	return out
}

// RatchetTree returns the public tree in ratchet_tree extension form, for
// joiners that get it out of band (§12.4.3.3).
func (g *Group) RatchetTree() RatchetTree { return g.tree.export() }

// CreateOptions tunes Create; the zero value is fine.
type CreateOptions struct {
	// GroupID defaults to 32 random bytes.
	GroupID []byte
	// Extensions are the initial group context extensions, e.g.
	// required_capabilities or external_senders.
	Extensions []Extension
}

// Create starts a one-member group at epoch 0 (RFC 9420 §11).
func Create(id *Identity, cfg *Config, opts *CreateOptions) (*Group, error) {
	s, err := LookupCipherSuite(id.Suite)
	if err != nil {
		return nil, err
	}
	var o CreateOptions
	if opts != nil {
		o = *opts
	}
	if o.GroupID == nil {
		o.GroupID = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, o.GroupID); err != nil {
			return nil, fmt.Errorf("group id: %w", err)
		}
	}
	if err := uniqueExtensions(o.Extensions); err != nil {
		return nil, err
	}
	encPub, encPriv, err := s.GenerateHPKEKeyPair()
	if err != nil {
		return nil, err
	}
	ln := &LeafNode{
		EncryptionKey: encPub, SignatureKey: id.SignaturePub, Credential: id.Credential,
		Capabilities: defaultCapabilities(id.Suite), Source: LeafNodeSourceUpdate,
	}
	// The creator's leaf is bound to the group like an updated leaf, which
	// keeps it from being replayed into another group.
	if err := signLeaf(s, ln, id.SignaturePriv, o.GroupID, 0); err != nil {
		return nil, err
	}
	if err := supportsCapabilities(&ln.Capabilities, o.Extensions); err != nil {
		return nil, err
	}
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	g := &Group{
		suite: s, cfg: c, sigPriv: id.SignaturePriv,
		tree: &ratchetTree{nodes: []*Node{{Type: NodeTypeLeaf, LeafNode: ln}}},
		priv: &treePrivate{leaf: 0, keys: map[uint32]hpkeKeyPair{0: {pub: encPub, priv: encPriv}}},
	}
	th, err := g.tree.treeHash(s)
	if err != nil {
		return nil, err
	}
	g.ctx = GroupContext{Version: MLS10, CipherSuite: s.ID, GroupID: o.GroupID, TreeHash: th,
		ConfirmedTranscriptHash: []byte{}, Extensions: o.Extensions}
	// Epoch 0 starts from a random secret (§11); a random joiner secret
	// gives the same distribution through the usual schedule.
	joiner := make([]byte, s.nh)
	if _, err := io.ReadFull(rand.Reader, joiner); err != nil {
		return nil, err
	}
	e, err := s.EpochFromJoiner(joiner, nil, &g.ctx)
	if err != nil {
		return nil, err
	}
	// §8.2: epoch 0's interim hash folds in a tag over the empty
	// confirmed transcript.
	g.confTag = s.ConfirmationTag(e.ConfirmationKey, g.ctx.ConfirmedTranscriptHash)
	if g.interim, err = s.InterimTranscriptHash(g.ctx.ConfirmedTranscriptHash, g.confTag); err != nil {
		return nil, err
	}
	if err := g.installEpoch(e); err != nil {
		return nil, err
	}
	return g, nil
}

// installEpoch keeps the epoch secrets a member needs and builds the
// secret tree; the joiner, welcome and epoch secrets are deleted (§9.2).
func (g *Group) installEpoch(e *EpochSecrets) error {
	st, err := NewSecretTree(g.suite, e.EncryptionSecret, g.tree.numLeaves(), g.cfg.SecretTree)
	if err != nil {
		return err
	}
	zero(e.EncryptionSecret)
	zero(e.EpochSecret)
	zero(e.WelcomeSecret)
	zero(e.JoinerSecret)
	e.EncryptionSecret, e.EpochSecret, e.WelcomeSecret, e.JoinerSecret = nil, nil, nil, nil
	g.secrets = e
	g.secretTree = st
	g.proposals = nil
	g.resumption = append(g.resumption, resumptionPSK{epoch: g.ctx.Epoch, psk: e.ResumptionPSK})
	if len(g.resumption) > resumptionWindow {
		g.resumption = slices.Clone(g.resumption[len(g.resumption)-resumptionWindow:])
	}
	g.priv.prune(g.tree)
	return nil
}

// signerKey returns the signature key of a member leaf.
func (g *Group) signerKey(leaf uint32) ([]byte, error) {
	ln := g.tree.leaf(leaf)
	if ln == nil {
		return nil, fmt.Errorf("sender leaf %d: %w", leaf, ErrBlankLeaf)
	}
	return ln.SignatureKey, nil
}

// frame builds member content for this epoch.
func (g *Group) frame(ct ContentType) *FramedContent {
	return &FramedContent{GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch,
		Sender: Sender{Type: SenderTypeMember, Index: g.priv.leaf}, ContentType: ct}
}

func (g *Group) padding() int {
	if g.cfg.PaddingBlock > 0 {
		return g.cfg.PaddingBlock
	}
	return 64
}

// protect signs content and wraps it as an MLSMessage, PrivateMessage
// unless public is set (§6). It returns the message and the
// AuthenticatedContent (whose encoding proposal references hash).
func (g *Group) protect(fc *FramedContent, public bool, confTag func(*AuthenticatedContent) error) ([]byte, *AuthenticatedContent, error) {
	wf := WireFormatPrivateMessage
	if public {
		wf = WireFormatPublicMessage
	}
	ac, err := g.suite.SignContent(wf, fc, &g.ctx, g.sigPriv)
	if err != nil {
		return nil, nil, err
	}
	if confTag != nil {
		if err := confTag(ac); err != nil {
			return nil, nil, err
		}
	}
	m := MLSMessage{Version: MLS10, WireFormat: wf}
	if public {
		if m.PublicMessage, err = g.suite.ProtectPublic(ac, &g.ctx, g.secrets.MembershipKey); err != nil {
			return nil, nil, err
		}
	} else {
		if m.PrivateMessage, err = g.suite.ProtectPrivate(ac, g.secretTree, g.secrets.SenderDataSecret, g.padding()); err != nil {
			return nil, nil, err
		}
	}
	out, err := m.Marshal()
	if err != nil {
		return nil, nil, err
	}
	return out, ac, nil
}

// Encrypt protects application data as a PrivateMessage (§6.3).
func (g *Group) Encrypt(data []byte) ([]byte, error) {
	if g.inactive {
		return nil, fmt.Errorf("encrypt: %w", ErrGroupInactive)
	}
	fc := g.frame(ContentTypeApplication)
	fc.ApplicationData = data
	out, _, err := g.protect(fc, false, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return out, nil
}

// Propose sends a proposal (§12.1) and remembers it so that a later
// commit, by anyone, can include it by reference.
func (g *Group) Propose(p *Proposal) ([]byte, error) {
	if g.inactive {
		return nil, fmt.Errorf("propose: %w", ErrGroupInactive)
	}
	if p.Type == ProposalTypeExternalInit {
		return nil, fmt.Errorf("propose external_init: %w", ErrInvalidProposals)
	}
	fc := g.frame(ContentTypeProposal)
	fc.Proposal = p
	out, ac, err := g.protect(fc, g.cfg.PublicHandshake, nil)
	if err != nil {
		return nil, fmt.Errorf("propose: %w", err)
	}
	if err := g.cacheProposal(ac); err != nil {
		return nil, fmt.Errorf("propose: %w", err)
	}
	return out, nil
}

// ProposeUpdate proposes a fresh leaf key for this member (§12.1.2).
func (g *Group) ProposeUpdate() ([]byte, error) {
	ln, priv, err := g.freshLeaf(LeafNodeSourceUpdate)
	if err != nil {
		return nil, fmt.Errorf("propose update: %w", err)
	}
	out, err := g.Propose(&Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}})
	if err != nil {
		return nil, err
	}
	// The private key is needed if the update is committed; it stays
	// unused (and is pruned) otherwise.
	g.priv.keys[updateKeySlot(ln.EncryptionKey)] = hpkeKeyPair{pub: ln.EncryptionKey, priv: priv}
	return out, nil
}

// updateKeySlot parks the private key of a proposed leaf under an index no
// tree node has, until a commit places it at this member's leaf.
func updateKeySlot(pub []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range pub {
		h = (h ^ uint32(c)) * 16777619
	}
	return 1<<31 | h>>1
}

// freshLeaf copies this member's leaf with a new encryption key, signed
// for source (update) or left for createUpdatePath to sign (commit).
func (g *Group) freshLeaf(source LeafNodeSource) (*LeafNode, []byte, error) {
	pub, priv, err := g.suite.GenerateHPKEKeyPair()
	if err != nil {
		return nil, nil, err
	}
	old := g.tree.leaf(g.priv.leaf)
	ln := &LeafNode{
		EncryptionKey: pub, SignatureKey: old.SignatureKey, Credential: old.Credential,
		Capabilities: old.Capabilities, Source: source, Extensions: old.Extensions,
	}
	if source == LeafNodeSourceUpdate {
		if err := signLeaf(g.suite, ln, g.sigPriv, g.ctx.GroupID, g.priv.leaf); err != nil {
			return nil, nil, err
		}
	}
	return ln, priv, nil
}

// maxPendingProposals bounds the proposals kept in one epoch: each one
// received costs a trial application at the next commit (commit), and
// any member can send them.
const maxPendingProposals = 64

func (g *Group) cacheProposal(ac *AuthenticatedContent) error {
	if len(g.proposals) >= maxPendingProposals {
		return fmt.Errorf("more than %d proposals in one epoch: %w", maxPendingProposals, ErrInvalidProposals)
	}
	data, err := ac.Marshal()
	if err != nil {
		return err
	}
	g.proposals = append(g.proposals, cachedProposal{
		ref: g.suite.MakeProposalRef(data), proposal: ac.Content.Proposal, sender: ac.Content.Sender,
	})
	return nil
}

// DiscardProposals forgets every proposal received or sent in this epoch,
// so that no later commit of this member includes them by reference. An
// application that commits only proposals of its own, by value, calls it
// after each proposal it receives: a proposal it will never commit is
// then not kept with the state either.
func (g *Group) DiscardProposals() { g.proposals = nil }

// Received is the outcome of ProcessMessage.
type Received struct {
	ContentType ContentType
	Sender      Sender
	// ApplicationData is set for application messages.
	ApplicationData []byte
	// Proposal is set for proposals (now cached for a commit).
	Proposal *Proposal
	// Removed is set when a commit removed this member; the group is then
	// inactive.
	Removed bool
	// External is set for an external commit (§12.4.3.2): who joined,
	// and whom it replaced.
	External *ExternalJoin
	// AuthenticatedData is the content's authenticated_data (RFC 9420
	// §6), verified with it.
	AuthenticatedData []byte
}

// ExternalJoin describes a processed external commit.
type ExternalJoin struct {
	// Joiner is the new member, at the leaf the commit gave it.
	Joiner Member
	// Resynced is the member whose leaf the commit's Remove took out
	// (the joiner's old self, same identity); nil for a plain join.
	Resynced *Member
}

// ProcessMessage handles a PublicMessage or PrivateMessage of this group
// (§6, §12.4.2). Application data is returned; proposals are verified and
// cached; commits move the group to the next epoch. On error the group is
// unchanged. Messages this member sent must not be fed back.
func (g *Group) ProcessMessage(data []byte) (*Received, error) {
	if g.inactive {
		return nil, fmt.Errorf("process message: %w", ErrGroupInactive)
	}
	var m MLSMessage
	if err := m.Unmarshal(data); err != nil {
		return nil, fmt.Errorf("process message: %w", err)
	}
	next := g.clone()
	r, err := next.process(&m)
	if err != nil {
		return nil, fmt.Errorf("process message: %w", err)
	}
	*g = *next
	return r, nil
}

func (g *Group) process(m *MLSMessage) (*Received, error) {
	var ac *AuthenticatedContent
	var err error
	switch m.WireFormat {
	case WireFormatPrivateMessage:
		ac, err = g.suite.UnprotectPrivate(m.PrivateMessage, &g.ctx, g.secretTree, g.secrets.SenderDataSecret, g.signerKey)
	case WireFormatPublicMessage:
		ac, err = g.unprotectPublic(m.PublicMessage)
	default:
		return nil, fmt.Errorf("%v: %w", m.WireFormat, ErrUnexpectedMessage)
	}
	if err != nil {
		return nil, err
	}
	r := &Received{ContentType: ac.Content.ContentType, Sender: ac.Content.Sender, AuthenticatedData: slices.Clone(ac.Content.AuthenticatedData)}
	switch ac.Content.ContentType {
	case ContentTypeApplication:
		r.ApplicationData = ac.Content.ApplicationData
	case ContentTypeProposal:
		if err := g.checkProposalSender(ac.Content.Proposal, ac.Content.Sender); err != nil {
			return nil, err
		}
		r.Proposal = ac.Content.Proposal
		if err := g.cacheProposal(ac); err != nil {
			return nil, err
		}
	case ContentTypeCommit:
		var resynced *Member
		if ac.Content.Sender.Type == SenderTypeNewMemberCommit {
			resynced = g.externalRemoved(ac.Content.Commit)
		}
		removed, err := g.processCommit(ac)
		if err != nil {
			return nil, err
		}
		r.Removed = removed
		if ac.Content.Sender.Type == SenderTypeNewMemberCommit {
			r.External = &ExternalJoin{Resynced: resynced}
			if i, ok := g.tree.findLeaf(ac.Content.Commit.Path.LeafNode.EncryptionKey); ok {
				ln := g.tree.leaf(i)
				r.External.Joiner = Member{Leaf: i, Credential: ln.Credential, SignatureKey: slices.Clone(ln.SignatureKey)}
			}
		}
	}
	return r, nil
}

// unprotectPublic finds the sender's signature key by sender type and
// verifies a PublicMessage (§6.2): members by leaf (with membership tag),
// external senders by the external_senders extension, new members by the
// key in their own Add or UpdatePath.
func (g *Group) unprotectPublic(pm *PublicMessage) (*AuthenticatedContent, error) {
	c := &pm.Content
	var sigPub []byte
	var err error
	switch c.Sender.Type {
	case SenderTypeMember:
		sigPub, err = g.signerKey(c.Sender.Index)
	case SenderTypeExternal:
		data, ok := findExtension(g.ctx.Extensions, ExtensionTypeExternalSenders)
		if !ok {
			return nil, fmt.Errorf("external sender without external_senders: %w", ErrUnexpectedMessage)
		}
		senders, e := UnmarshalExternalSenders(data)
		if e != nil {
			return nil, e
		}
		if int(c.Sender.Index) >= len(senders) {
			return nil, fmt.Errorf("external sender %d: %w", c.Sender.Index, ErrUnexpectedMessage)
		}
		sigPub = senders[c.Sender.Index].SignatureKey
	case SenderTypeNewMemberProposal:
		if c.ContentType != ContentTypeProposal || c.Proposal.Type != ProposalTypeAdd {
			return nil, fmt.Errorf("new member proposal of %v: %w", c.ContentType, ErrUnexpectedMessage)
		}
		sigPub = c.Proposal.Add.KeyPackage.LeafNode.SignatureKey
	case SenderTypeNewMemberCommit:
		if c.ContentType != ContentTypeCommit || c.Commit.Path == nil {
			return nil, fmt.Errorf("external commit without path: %w", ErrInvalidCommit)
		}
		sigPub = c.Commit.Path.LeafNode.SignatureKey
	default:
		return nil, fmt.Errorf("%v: %w", c.Sender.Type, ErrUnexpectedMessage)
	}
	if err != nil {
		return nil, err
	}
	return g.suite.UnprotectPublic(pm, &g.ctx, g.secrets.MembershipKey, sigPub)
}

// checkProposalSender enforces who may send what (§12.1, §12.1.8):
// updates only from members; external senders no updates; new members
// only their own Add.
func (g *Group) checkProposalSender(p *Proposal, s Sender) error {
	switch {
	case p.Type == ProposalTypeExternalInit:
		return fmt.Errorf("external_init sent as a proposal: %w", ErrInvalidProposals)
	case p.Type == ProposalTypeUpdate && s.Type != SenderTypeMember:
		return fmt.Errorf("update from %v: %w", s.Type, ErrInvalidProposals)
	case s.Type == SenderTypeNewMemberProposal && p.Type != ProposalTypeAdd:
		return fmt.Errorf("%v from a new member: %w", p.Type, ErrInvalidProposals)
	}
	return nil
}

// Decrypt is ProcessMessage for a message that must be application data.
func (g *Group) Decrypt(data []byte) (plaintext []byte, sender uint32, err error) {
	var m MLSMessage
	if err := m.Unmarshal(data); err != nil {
		return nil, 0, fmt.Errorf("decrypt: %w", err)
	}
	if m.WireFormat != WireFormatPrivateMessage || m.PrivateMessage.ContentType != ContentTypeApplication {
		return nil, 0, fmt.Errorf("decrypt: %w", ErrUnexpectedMessage)
	}
	r, err := g.ProcessMessage(data)
	if err != nil {
		return nil, 0, err
	}
	return r.ApplicationData, r.Sender.Index, nil
}

// ExternalProposal creates a proposal from an external sender
// (§12.1.8): a party listed at senderIndex in the group's
// external_senders extension — for qpc, the delivery service removing
// a deleted account. It is sent as a PublicMessage without membership tag;
// only Add, Remove, PreSharedKey, ReInit and GroupContextExtensions are
// allowed.
func ExternalProposal(suite CipherSuiteID, groupID []byte, epoch uint64, senderIndex uint32, sigPriv []byte, p *Proposal) ([]byte, error) {
	s, err := LookupCipherSuite(suite)
	if err != nil {
		return nil, err
	}
	switch p.Type {
	case ProposalTypeAdd, ProposalTypeRemove, ProposalTypePSK, ProposalTypeReInit, ProposalTypeGroupContextExtensions:
	default:
		return nil, fmt.Errorf("external %v proposal: %w", p.Type, ErrInvalidProposals)
	}
	fc := &FramedContent{GroupID: groupID, Epoch: epoch, Sender: Sender{Type: SenderTypeExternal, Index: senderIndex},
		ContentType: ContentTypeProposal, Proposal: p}
	// External senders sign without the group context (§6.1).
	ac, err := s.SignContent(WireFormatPublicMessage, fc, nil, sigPriv)
	if err != nil {
		return nil, fmt.Errorf("external proposal: %w", err)
	}
	gc := &GroupContext{GroupID: groupID, Epoch: epoch}
	pm, err := s.ProtectPublic(ac, gc, nil)
	if err != nil {
		return nil, fmt.Errorf("external proposal: %w", err)
	}
	return (&MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}).Marshal()
}

// externalRemoved is the member an external commit's Remove takes out
// (its resync, §12.4.3.2), looked up before the commit is applied; nil if
// the commit removes no one (or names a blank leaf, which processing
// refuses).
func (g *Group) externalRemoved(c *Commit) *Member {
	for _, por := range c.Proposals {
		if por.Type != ProposalOrRefTypeProposal || por.Proposal.Type != ProposalTypeRemove {
			continue
		}
		i := por.Proposal.Remove.Removed
		if ln := g.tree.leaf(i); ln != nil {
			return &Member{Leaf: i, Credential: ln.Credential, SignatureKey: slices.Clone(ln.SignatureKey)}
		}
	}
	return nil
}
