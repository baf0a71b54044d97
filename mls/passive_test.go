package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

type welcomeCase struct {
	CipherSuite uint16   `json:"cipher_suite"`
	InitPriv    hexBytes `json:"init_priv"`
	KeyPackage  hexBytes `json:"key_package"`
	SignerPub   hexBytes `json:"signer_pub"`
	Welcome     hexBytes `json:"welcome"`
}

// TestVectorWelcome decrypts each Welcome with the key package's init key
// (§12.4.3.1), verifies the GroupInfo signature with signer_pub and the
// confirmation tag with the epoch derived from the joiner secret.
func TestVectorWelcome(t *testing.T) {
	var cases []welcomeCase
	loadVectors(t, "welcome.json", &cases)
	c := newTally("welcome.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkWelcome(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkWelcome(s *CipherSuite, tc *welcomeCase) error {
	var kpm, wm MLSMessage
	if err := kpm.Unmarshal(tc.KeyPackage); err != nil {
		return err
	}
	if err := wm.Unmarshal(tc.Welcome); err != nil {
		return err
	}
	noPSK := func(ids []PreSharedKeyID) ([]PSKInput, error) {
		if len(ids) != 0 {
			return nil, ErrUnknownPSK
		}
		return nil, nil
	}
	gs, gi, psk, err := s.openWelcome(wm.Welcome, kpm.KeyPackage, tc.InitPriv, noPSK)
	if err != nil {
		return err
	}
	if err := s.verifyGroupInfo(gi, tc.SignerPub); err != nil {
		return err
	}
	e, err := s.EpochFromJoiner(gs.JoinerSecret, psk, &gi.GroupContext)
	if err != nil {
		return err
	}
	if !s.VerifyConfirmationTag(e.ConfirmationKey, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag) {
		return ErrConfirmationTag
	}
	// Negative: another key package's init key must not open it.
	other := *kpm.KeyPackage
	other.InitKey = append([]byte(nil), other.InitKey...)
	other.InitKey[len(other.InitKey)-1] ^= 1
	if _, _, _, err := s.openWelcome(wm.Welcome, &other, tc.InitPriv, noPSK); !errors.Is(err, ErrWelcomeNotForUs) {
		return fmt.Errorf("welcome opened for another key package: %v", err)
	}
	return nil
}

type passiveCase struct {
	CipherSuite  uint16 `json:"cipher_suite"`
	ExternalPSKs []struct {
		PSKID hexBytes `json:"psk_id"`
		PSK   hexBytes `json:"psk"`
	} `json:"external_psks"`
	KeyPackage                hexBytes `json:"key_package"`
	SignaturePriv             hexBytes `json:"signature_priv"`
	EncryptionPriv            hexBytes `json:"encryption_priv"`
	InitPriv                  hexBytes `json:"init_priv"`
	Welcome                   hexBytes `json:"welcome"`
	RatchetTree               hexBytes `json:"ratchet_tree"`
	InitialEpochAuthenticator hexBytes `json:"initial_epoch_authenticator"`
	Epochs                    []struct {
		Proposals          []hexBytes `json:"proposals"`
		Commit             hexBytes   `json:"commit"`
		EpochAuthenticator hexBytes   `json:"epoch_authenticator"`
	} `json:"epochs"`
}

// runPassive joins by Welcome and follows every epoch of a passive-client
// vector, comparing epoch authenticators (§8.7). After each commit the
// state also goes through Marshal/UnmarshalGroup, so that storage is
// exercised on real groups.
func runPassive(t *testing.T, file string) {
	var cases []passiveCase
	loadVectors(t, file, &cases)
	c := newTally(file)
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkPassive(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkPassive(s *CipherSuite, tc *passiveCase) error {
	var kpm MLSMessage
	if err := kpm.Unmarshal(tc.KeyPackage); err != nil {
		return err
	}
	sigPub, err := s.SignaturePublicKey(tc.SignaturePriv)
	if err != nil {
		return err
	}
	kp := &KeyPackagePrivate{KeyPackage: *kpm.KeyPackage, InitPriv: tc.InitPriv, EncryptionPriv: tc.EncryptionPriv,
		Identity: &Identity{Suite: s.ID, Credential: kpm.KeyPackage.LeafNode.Credential, SignaturePub: sigPub, SignaturePriv: tc.SignaturePriv}}
	cfg := &Config{ExternalPSKs: map[string][]byte{}}
	for _, p := range tc.ExternalPSKs {
		cfg.ExternalPSKs[string(p.PSKID)] = p.PSK
	}
	var rt RatchetTree
	if len(tc.RatchetTree) > 0 {
		if err := rt.Unmarshal(tc.RatchetTree); err != nil {
			return err
		}
	}
	g, err := Join(tc.Welcome, kp, cfg, rt)
	if err != nil {
		return err
	}
	if !bytes.Equal(g.EpochAuthenticator(), tc.InitialEpochAuthenticator) {
		return fmt.Errorf("initial epoch authenticator")
	}
	for i, e := range tc.Epochs {
		for j, p := range e.Proposals {
			if _, err := g.ProcessMessage(p); err != nil {
				return fmt.Errorf("epoch %d proposal %d: %w", i, j, err)
			}
		}
		if _, err := g.ProcessMessage(e.Commit); err != nil {
			return fmt.Errorf("epoch %d commit: %w", i, err)
		}
		if !bytes.Equal(g.EpochAuthenticator(), e.EpochAuthenticator) {
			return fmt.Errorf("epoch %d authenticator", i)
		}
		if i%16 == 0 {
			st, err := g.Marshal()
			if err != nil {
				return err
			}
			if g, err = UnmarshalGroup(st, cfg); err != nil {
				return fmt.Errorf("epoch %d: %w", i, err)
			}
		}
	}
	return nil
}

func TestVectorPassiveClientWelcome(t *testing.T) { runPassive(t, "passive-client-welcome.json") }

func TestVectorPassiveClientHandlingCommit(t *testing.T) {
	runPassive(t, "passive-client-handling-commit.json")
}

func TestVectorPassiveClientRandom(t *testing.T) { runPassive(t, "passive-client-random.json") }
