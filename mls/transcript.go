package mls

import (
	"errors"
	"fmt"
)

// ErrNotCommit is returned when a transcript hash is asked of content that
// is not a commit: only commits advance the transcript (RFC 9420 §8.2).
var ErrNotCommit = errors.New("mls: content is not a commit")

// Transcript hashes (RFC 9420 §8.2) chain every commit of the group:
//
//	confirmed_transcript_hash_[n] = Hash(interim_transcript_hash_[n-1] ||
//	                                     ConfirmedTranscriptHashInput_[n])
//	interim_transcript_hash_[n]   = Hash(confirmed_transcript_hash_[n] ||
//	                                     InterimTranscriptHashInput_[n])
//
// The confirmed hash covers the commit and its signature but not its
// confirmation tag, which is computed from the new epoch's secrets over
// the confirmed hash; the interim hash then folds the tag in, so the next
// commit also commits to this one's confirmation.

// ConfirmedTranscriptHash computes confirmed_transcript_hash_[n] from the
// previous interim hash and the commit's AuthenticatedContent.
func (s *CipherSuite) ConfirmedTranscriptHash(interimBefore []byte, commit *AuthenticatedContent) ([]byte, error) {
	if commit.Content.ContentType != ContentTypeCommit {
		return nil, fmt.Errorf("confirmed transcript hash: %w", ErrNotCommit)
	}
	in, err := commit.MarshalConfirmedTranscriptHashInput()
	if err != nil {
		return nil, fmt.Errorf("confirmed transcript hash: %w", err)
	}
	h := s.newHash()
	h.Write(interimBefore)
	h.Write(in)
	return h.Sum(nil), nil
}

// InterimTranscriptHash computes interim_transcript_hash_[n] from the
// confirmed hash and the commit's confirmation tag.
func (s *CipherSuite) InterimTranscriptHash(confirmed, confirmationTag []byte) ([]byte, error) {
	in, err := MarshalInterimTranscriptHashInput(confirmationTag)
	if err != nil {
		return nil, fmt.Errorf("interim transcript hash: %w", err)
	}
	h := s.newHash()
	h.Write(confirmed)
	h.Write(in)
	return h.Sum(nil), nil
}

// TranscriptHashes advances both transcript hashes over one commit.
func (s *CipherSuite) TranscriptHashes(interimBefore []byte, commit *AuthenticatedContent) (confirmed, interim []byte, err error) {
	if confirmed, err = s.ConfirmedTranscriptHash(interimBefore, commit); err != nil {
		return nil, nil, err
	}
	if interim, err = s.InterimTranscriptHash(confirmed, commit.Auth.ConfirmationTag); err != nil {
		return nil, nil, err
	}
	return confirmed, interim, nil
}
