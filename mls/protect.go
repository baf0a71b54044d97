package mls

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Message protection (RFC 9420 §6.1–§6.3): signing FramedContent, the
// membership tag of PublicMessage, and the two-layer encryption of
// PrivateMessage (content under the secret tree, sender data under a key
// derived from the content ciphertext). The encodings of the structures
// are in framing.go; this file adds only the cryptography around them.

// Errors of message protection, each wrapped once with the operation.
var (
	// ErrWrongGroup: the message names another group or epoch than the
	// group context it is processed with (§6.1: recipients check both).
	ErrWrongGroup = errors.New("mls: message is for another group or epoch")
	// ErrMembershipTag: a PublicMessage from a member carries a membership
	// tag that does not verify, i.e. the sender did not know the epoch's
	// membership key (§6.2).
	ErrMembershipTag = errors.New("mls: membership tag does not verify")
	// ErrProtectionMismatch: the content cannot be protected or accepted
	// this way — wrong wire format for the message type, a non-member
	// sender in a PrivateMessage, or application data in a PublicMessage.
	ErrProtectionMismatch = errors.New("mls: content does not fit this message protection")
)

// reuseGuardSize is the length of SenderData.reuse_guard (§6.3.1).
const reuseGuardSize = 4

// SignContent signs content as sent with wire format wf (§6.1): it builds
// FramedContentTBS — which binds the protocol version, the wire format and,
// for member and new_member_commit senders, the group context — and signs
// it with SignWithLabel(., "FramedContentTBS", .). For a commit the caller
// sets Auth.ConfirmationTag afterwards, because the tag depends on the
// transcript hash that covers this signature.
func (s *CipherSuite) SignContent(wf WireFormat, content *FramedContent, gc *GroupContext, sigPriv []byte) (*AuthenticatedContent, error) {
	ac := &AuthenticatedContent{WireFormat: wf, Content: *content}
	tbs, err := ac.MarshalTBS(gc)
	if err != nil {
		return nil, fmt.Errorf("sign framed content: %w", err)
	}
	sig, err := s.SignWithLabel(sigPriv, "FramedContentTBS", tbs)
	if err != nil {
		return nil, fmt.Errorf("sign framed content: %w", err)
	}
	ac.Auth = FramedContentAuthData{ContentType: content.ContentType, Signature: sig}
	return ac, nil
}

// VerifyContent checks the signature of authenticated content against
// the sender's signature public key (§6.1).
func (s *CipherSuite) VerifyContent(ac *AuthenticatedContent, gc *GroupContext, sigPub []byte) error {
	tbs, err := ac.MarshalTBS(gc)
	if err != nil {
		return fmt.Errorf("verify framed content: %w", err)
	}
	if err := s.VerifyWithLabel(sigPub, "FramedContentTBS", tbs, ac.Auth.Signature); err != nil {
		return fmt.Errorf("verify framed content: %w", err)
	}
	return nil
}

// checkGroup rejects content for another group or epoch.
func checkGroup(groupID []byte, epoch uint64, gc *GroupContext) error {
	if !hmac.Equal(groupID, gc.GroupID) || epoch != gc.Epoch {
		return ErrWrongGroup
	}
	return nil
}

// ProtectPublic wraps signed content as a PublicMessage (§6.2). Member
// senders add membership_tag = MAC(membership_key, AuthenticatedContentTBM)
// so that other members know the message comes from inside the group.
// Application data is refused: RFC 9420 §6.2 allows PublicMessage only
// for handshake messages, and this messenger never sends content in clear.
func (s *CipherSuite) ProtectPublic(ac *AuthenticatedContent, gc *GroupContext, membershipKey []byte) (*PublicMessage, error) {
	if ac.WireFormat != WireFormatPublicMessage || ac.Content.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("protect public message: %w", ErrProtectionMismatch)
	}
	if err := checkGroup(ac.Content.GroupID, ac.Content.Epoch, gc); err != nil {
		return nil, fmt.Errorf("protect public message: %w", err)
	}
	pm := &PublicMessage{Content: ac.Content, Auth: ac.Auth}
	if ac.Content.Sender.Type == SenderTypeMember {
		tbm, err := ac.MarshalTBM(gc)
		if err != nil {
			return nil, fmt.Errorf("protect public message: %w", err)
		}
		pm.MembershipTag = s.MAC(membershipKey, tbm)
	}
	return pm, nil
}

// UnprotectPublic verifies a PublicMessage (§6.2): group and epoch, the
// membership tag for member senders (in constant time), and the
// signature under sigPub, the sender's signature key. It returns the
// authenticated content; confirmation tags of commits are the caller's to
// check once the new epoch's confirmation key is known.
func (s *CipherSuite) UnprotectPublic(pm *PublicMessage, gc *GroupContext, membershipKey, sigPub []byte) (*AuthenticatedContent, error) {
	if pm.Content.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("unprotect public message: %w", ErrProtectionMismatch)
	}
	if err := checkGroup(pm.Content.GroupID, pm.Content.Epoch, gc); err != nil {
		return nil, fmt.Errorf("unprotect public message: %w", err)
	}
	ac := pm.AuthenticatedContent()
	if pm.Content.Sender.Type == SenderTypeMember {
		tbm, err := ac.MarshalTBM(gc)
		if err != nil {
			return nil, fmt.Errorf("unprotect public message: %w", err)
		}
		if !s.VerifyMAC(membershipKey, tbm, pm.MembershipTag) {
			return nil, fmt.Errorf("unprotect public message: %w", ErrMembershipTag)
		}
	}
	if err := s.VerifyContent(ac, gc, sigPub); err != nil {
		return nil, fmt.Errorf("unprotect public message: %w", err)
	}
	return ac, nil
}

// ratchetFor is the secret-tree ratchet a content type is encrypted
// with (§9.1): application data on the application ratchet, proposals
// and commits on the handshake ratchet.
func ratchetFor(ct ContentType) RatchetType {
	if ct == ContentTypeApplication {
		return ApplicationRatchet
	}
	return HandshakeRatchet
}

// applyReuseGuard XORs the reuse guard into the first bytes of the
// ratchet nonce (§6.3.1). The guard makes nonce reuse unlikely even if a
// sender's state is cloned or rolled back and a generation is used twice.
func applyReuseGuard(nonce []byte, guard [reuseGuardSize]byte) []byte {
	out := append([]byte(nil), nonce...)
	for i := range guard {
		out[i] ^= guard[i]
	}
	return out
}

// paddingFor returns how many zero bytes bring a plaintext of n bytes to
// a multiple of block (§6.3.1 leaves the padding policy to the sender; a
// block size hides the exact length of content from the transport).
func paddingFor(n, block int) int {
	if block <= 1 || n%block == 0 {
		return 0
	}
	return block - n%block
}

// ProtectPrivate encrypts signed content as a PrivateMessage (§6.3) from
// the member at leaf ac.Content.Sender.Index, taking the next key of the
// sender's ratchet in tree. The PrivateMessageContent plaintext is padded
// with zeros to a multiple of padBlock bytes (no padding if padBlock ≤ 1).
func (s *CipherSuite) ProtectPrivate(ac *AuthenticatedContent, tree *SecretTree, senderDataSecret []byte, padBlock int) (*PrivateMessage, error) {
	c := &ac.Content
	if ac.WireFormat != WireFormatPrivateMessage || c.Sender.Type != SenderTypeMember {
		return nil, fmt.Errorf("protect private message: %w", ErrProtectionMismatch)
	}
	if tree.suite != s {
		return nil, fmt.Errorf("protect private message: secret tree of suite 0x%04x: %w", uint16(tree.suite.ID), ErrProtectionMismatch)
	}
	pc := &PrivateMessageContent{
		ContentType: c.ContentType, ApplicationData: c.ApplicationData,
		Proposal: c.Proposal, Commit: c.Commit, Auth: ac.Auth,
	}
	plain, err := pc.Marshal()
	if err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	if pad := paddingFor(len(plain), padBlock); pad > 0 {
		plain = append(plain, make([]byte, pad)...)
	}
	pm := &PrivateMessage{
		GroupID: c.GroupID, Epoch: c.Epoch, ContentType: c.ContentType,
		AuthenticatedData: c.AuthenticatedData,
	}
	contentAAD, err := pm.MarshalPrivateContentAAD()
	if err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	k, err := tree.NextKey(c.Sender.Index, ratchetFor(c.ContentType))
	if err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	defer zeroKey(k)
	sd := SenderData{LeafIndex: c.Sender.Index, Generation: k.Generation}
	if _, err := io.ReadFull(rand.Reader, sd.ReuseGuard[:]); err != nil {
		return nil, fmt.Errorf("protect private message: reuse guard: %w", err)
	}
	if pm.Ciphertext, err = s.Seal(k.Key, applyReuseGuard(k.Nonce, sd.ReuseGuard), contentAAD, plain); err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}

	// Sender data (§6.3.2) is encrypted under a key and nonce derived from
	// a sample of the content ciphertext, so hiding who sent the message
	// needs no per-message state.
	sdPlain, err := sd.Marshal()
	if err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	sdAAD, err := pm.MarshalSenderDataAAD()
	if err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	sdKey, sdNonce := s.SenderDataKeyNonce(senderDataSecret, pm.Ciphertext)
	if pm.EncryptedSenderData, err = s.Seal(sdKey, sdNonce, sdAAD, sdPlain); err != nil {
		return nil, fmt.Errorf("protect private message: %w", err)
	}
	return pm, nil
}

// SignerKeyFunc returns the signature public key of the member at a leaf
// of the current epoch's tree, or an error if that leaf is blank.
type SignerKeyFunc func(leaf uint32) ([]byte, error)

// UnprotectPrivate decrypts and verifies a PrivateMessage (§6.3): it
// decrypts the sender data, takes that generation's key from tree —
// consuming it, so a replayed message fails — decrypts the content,
// checks that the padding is all zeros, and verifies the signature with
// the key signerKey returns for the sender's leaf.
func (s *CipherSuite) UnprotectPrivate(pm *PrivateMessage, gc *GroupContext, tree *SecretTree, senderDataSecret []byte, signerKey SignerKeyFunc) (*AuthenticatedContent, error) {
	if err := checkGroup(pm.GroupID, pm.Epoch, gc); err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	if tree.suite != s {
		return nil, fmt.Errorf("unprotect private message: secret tree of suite 0x%04x: %w", uint16(tree.suite.ID), ErrProtectionMismatch)
	}
	sdAAD, err := pm.MarshalSenderDataAAD()
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	sdKey, sdNonce := s.SenderDataKeyNonce(senderDataSecret, pm.Ciphertext)
	sdPlain, err := s.Open(sdKey, sdNonce, sdAAD, pm.EncryptedSenderData)
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: sender data: %w", err)
	}
	var sd SenderData
	if err := sd.Unmarshal(sdPlain); err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	contentAAD, err := pm.MarshalPrivateContentAAD()
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	typ := ratchetFor(pm.ContentType)
	k, err := tree.Key(sd.LeafIndex, typ, sd.Generation)
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	plain, err := s.Open(k.Key, applyReuseGuard(k.Nonce, sd.ReuseGuard), contentAAD, pm.Ciphertext)
	if err != nil {
		// Whoever forged this knew the sender-data secret but not the
		// sender's key; give the key back so that the genuine message for
		// this generation can still be read.
		tree.restore(sd.LeafIndex, typ, k)
		return nil, fmt.Errorf("unprotect private message: content: %w", err)
	}
	zeroKey(k)
	pc, err := UnmarshalPrivateMessageContent(plain, pm.ContentType)
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	ac := &AuthenticatedContent{
		WireFormat: WireFormatPrivateMessage,
		Content: FramedContent{
			GroupID: pm.GroupID, Epoch: pm.Epoch,
			Sender:            Sender{Type: SenderTypeMember, Index: sd.LeafIndex},
			AuthenticatedData: pm.AuthenticatedData, ContentType: pm.ContentType,
			ApplicationData: pc.ApplicationData, Proposal: pc.Proposal, Commit: pc.Commit,
		},
		Auth: pc.Auth,
	}
	sigPub, err := signerKey(sd.LeafIndex)
	if err != nil {
		return nil, fmt.Errorf("unprotect private message: signer of leaf %d: %w", sd.LeafIndex, err)
	}
	if err := s.VerifyContent(ac, gc, sigPub); err != nil {
		return nil, fmt.Errorf("unprotect private message: %w", err)
	}
	return ac, nil
}
