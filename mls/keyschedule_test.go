package mls

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
)

type keyScheduleEpoch struct {
	TreeHash                hexBytes `json:"tree_hash"`
	CommitSecret            hexBytes `json:"commit_secret"`
	PSKSecret               hexBytes `json:"psk_secret"`
	ConfirmedTranscriptHash hexBytes `json:"confirmed_transcript_hash"`
	GroupContext            hexBytes `json:"group_context"`
	JoinerSecret            hexBytes `json:"joiner_secret"`
	WelcomeSecret           hexBytes `json:"welcome_secret"`
	InitSecret              hexBytes `json:"init_secret"`
	SenderDataSecret        hexBytes `json:"sender_data_secret"`
	EncryptionSecret        hexBytes `json:"encryption_secret"`
	ExporterSecret          hexBytes `json:"exporter_secret"`
	EpochAuthenticator      hexBytes `json:"epoch_authenticator"`
	ExternalSecret          hexBytes `json:"external_secret"`
	ConfirmationKey         hexBytes `json:"confirmation_key"`
	MembershipKey           hexBytes `json:"membership_key"`
	ResumptionPSK           hexBytes `json:"resumption_psk"`
	ExternalPub             hexBytes `json:"external_pub"`
	Exporter                struct {
		// The label is a string (used verbatim, even though the vector
		// generator filled it with hex digits); the context is hex bytes.
		Label   string   `json:"label"`
		Context hexBytes `json:"context"`
		Length  int      `json:"length"`
		Secret  hexBytes `json:"secret"`
	} `json:"exporter"`
}

type keyScheduleCase struct {
	CipherSuite       uint16             `json:"cipher_suite"`
	GroupID           hexBytes           `json:"group_id"`
	InitialInitSecret hexBytes           `json:"initial_init_secret"`
	Epochs            []keyScheduleEpoch `json:"epochs"`
}

func TestVectorKeySchedule(t *testing.T) {
	var cases []keyScheduleCase
	loadVectors(t, "key-schedule.json", &cases)
	c := newTally("key-schedule.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkKeySchedule(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkKeySchedule(s *CipherSuite, tc *keyScheduleCase) error {
	initSecret := tc.InitialInitSecret
	for n, ep := range tc.Epochs {
		gc := &GroupContext{
			Version: MLS10, CipherSuite: s.ID, GroupID: tc.GroupID, Epoch: uint64(n),
			TreeHash: ep.TreeHash, ConfirmedTranscriptHash: ep.ConfirmedTranscriptHash,
		}
		enc, err := gc.Marshal()
		if err != nil || !bytes.Equal(enc, ep.GroupContext) {
			return fmt.Errorf("epoch %d: group context %x, %v", n, enc, err)
		}
		e, err := s.DeriveEpoch(initSecret, ep.CommitSecret, ep.PSKSecret, gc)
		if err != nil {
			return fmt.Errorf("epoch %d: %w", n, err)
		}
		for _, f := range []struct {
			name      string
			got, want []byte
		}{
			{"joiner_secret", e.JoinerSecret, ep.JoinerSecret},
			{"welcome_secret", e.WelcomeSecret, ep.WelcomeSecret},
			{"init_secret", e.InitSecret, ep.InitSecret},
			{"sender_data_secret", e.SenderDataSecret, ep.SenderDataSecret},
			{"encryption_secret", e.EncryptionSecret, ep.EncryptionSecret},
			{"exporter_secret", e.ExporterSecret, ep.ExporterSecret},
			{"epoch_authenticator", e.EpochAuthenticator, ep.EpochAuthenticator},
			{"external_secret", e.ExternalSecret, ep.ExternalSecret},
			{"confirmation_key", e.ConfirmationKey, ep.ConfirmationKey},
			{"membership_key", e.MembershipKey, ep.MembershipKey},
			{"resumption_psk", e.ResumptionPSK, ep.ResumptionPSK},
		} {
			if !bytes.Equal(f.got, f.want) {
				return fmt.Errorf("epoch %d: %s = %x, want %x", n, f.name, f.got, f.want)
			}
		}
		// A joiner who received joiner_secret in a Welcome reaches the
		// same epoch.
		j, err := s.EpochFromJoiner(ep.JoinerSecret, ep.PSKSecret, gc)
		if err != nil || !bytes.Equal(j.EpochAuthenticator, ep.EpochAuthenticator) || !bytes.Equal(j.InitSecret, ep.InitSecret) {
			return fmt.Errorf("epoch %d: from joiner secret: %v", n, err)
		}
		if js, err := s.JoinerSecret(initSecret, ep.CommitSecret, gc); err != nil || !bytes.Equal(js, ep.JoinerSecret) {
			return fmt.Errorf("epoch %d: JoinerSecret: %x %v", n, js, err)
		}
		pub, _, err := s.ExternalKeyPair(e.ExternalSecret)
		if err != nil || !bytes.Equal(pub, ep.ExternalPub) {
			return fmt.Errorf("epoch %d: external_pub %x, %v", n, pub, err)
		}
		x := ep.Exporter
		out, err := s.Exporter(e.ExporterSecret, x.Label, x.Context, x.Length)
		if err != nil || !bytes.Equal(out, x.Secret) {
			return fmt.Errorf("epoch %d: exporter %x, %v", n, out, err)
		}
		initSecret = e.InitSecret
	}
	return nil
}

type pskSecretCase struct {
	CipherSuite uint16 `json:"cipher_suite"`
	PSKs        []struct {
		PSKID    hexBytes `json:"psk_id"`
		PSK      hexBytes `json:"psk"`
		PSKNonce hexBytes `json:"psk_nonce"`
	} `json:"psks"`
	PSKSecret hexBytes `json:"psk_secret"`
}

func TestVectorPSKSecret(t *testing.T) {
	var cases []pskSecretCase
	loadVectors(t, "psk_secret.json", &cases)
	c := newTally("psk_secret.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		var in []PSKInput
		for _, p := range tc.PSKs {
			in = append(in, PSKInput{ID: ExternalPSKID(p.PSKID, p.PSKNonce), PSK: p.PSK})
		}
		got, err := s.PSKSecret(in)
		if err != nil || !bytes.Equal(got, tc.PSKSecret) {
			c.fail(t, "case %d (suite %d, %d psks): %x, %v", i, tc.CipherSuite, len(in), got, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

// TestPSKSecretOrderAndResumption checks that PSKLabel binds order and
// PSK type: reordering or retyping a PSK changes psk_secret.
func TestPSKSecretOrderAndResumption(t *testing.T) {
	s := mustSuite(t, SuiteX25519AES128GCMSHA256Ed25519)
	a := PSKInput{ID: ExternalPSKID([]byte("a"), []byte("n1")), PSK: []byte("k1")}
	b := PSKInput{ID: ResumptionPSKID(ResumptionPSKUsageApplication, []byte("g"), 7, []byte("n2")), PSK: []byte("k2")}
	ab, err := s.PSKSecret([]PSKInput{a, b})
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := s.PSKSecret([]PSKInput{b, a})
	if bytes.Equal(ab, ba) {
		t.Error("psk_secret independent of order")
	}
	b2 := b
	b2.ID.Usage = ResumptionPSKUsageBranch
	ab2, _ := s.PSKSecret([]PSKInput{a, b2})
	if bytes.Equal(ab, ab2) {
		t.Error("psk_secret independent of resumption usage")
	}
	none, _ := s.PSKSecret(nil)
	if !bytes.Equal(none, make([]byte, s.Nh())) {
		t.Errorf("psk_secret of no PSKs: %x", none)
	}
	bad := PSKInput{ID: PreSharedKeyID{PSKType: 9}, PSK: []byte("k")}
	if _, err := s.PSKSecret([]PSKInput{bad}); err == nil {
		t.Error("invalid PSK type accepted")
	}
}

type transcriptCase struct {
	CipherSuite                  uint16   `json:"cipher_suite"`
	ConfirmationKey              hexBytes `json:"confirmation_key"`
	AuthenticatedContent         hexBytes `json:"authenticated_content"`
	InterimTranscriptHashBefore  hexBytes `json:"interim_transcript_hash_before"`
	ConfirmedTranscriptHashAfter hexBytes `json:"confirmed_transcript_hash_after"`
	InterimTranscriptHashAfter   hexBytes `json:"interim_transcript_hash_after"`
}

func TestVectorTranscriptHashes(t *testing.T) {
	var cases []transcriptCase
	loadVectors(t, "transcript-hashes.json", &cases)
	c := newTally("transcript-hashes.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		var ac AuthenticatedContent
		if err := ac.Unmarshal(tc.AuthenticatedContent); err != nil {
			c.fail(t, "case %d: %v", i, err)
			continue
		}
		if !s.VerifyConfirmationTag(tc.ConfirmationKey, tc.ConfirmedTranscriptHashAfter, ac.Auth.ConfirmationTag) {
			c.fail(t, "case %d: confirmation tag does not verify", i)
			continue
		}
		confirmed, interim, err := s.TranscriptHashes(tc.InterimTranscriptHashBefore, &ac)
		if err != nil || !bytes.Equal(confirmed, tc.ConfirmedTranscriptHashAfter) || !bytes.Equal(interim, tc.InterimTranscriptHashAfter) {
			c.fail(t, "case %d (suite %d): confirmed %x interim %x, %v", i, tc.CipherSuite, confirmed, interim, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

// independentEpoch recomputes the key schedule of RFC 9420 §8 for a
// SHA-256 suite directly from crypto/hkdf and hand-built KDFLabel bytes,
// sharing no code with keyschedule.go or crypto.go, so that the X-Wing
// suite (which has no official vectors) is checked against a second
// derivation.
func independentEpoch(t *testing.T, initSecret, commitSecret, pskSecret, groupContext []byte) map[string][]byte {
	t.Helper()
	vec := func(b []byte) []byte {
		if len(b) >= 64 {
			t.Fatal("independentEpoch handles only short vectors")
		}
		return append([]byte{byte(len(b))}, b...)
	}
	expand := func(secret []byte, label string, ctx []byte, n int) []byte {
		info := binary.BigEndian.AppendUint16(nil, uint16(n))
		info = append(info, vec([]byte("MLS 1.0 "+label))...)
		if len(ctx) < 64 {
			info = append(info, vec(ctx)...)
		} else {
			info = binary.BigEndian.AppendUint16(info, uint16(len(ctx))|0x4000)
			info = append(info, ctx...)
		}
		out, err := hkdf.Expand(sha256.New, secret, string(info), n)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	extract := func(salt, ikm []byte) []byte {
		out, err := hkdf.Extract(sha256.New, ikm, salt)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	joiner := expand(extract(initSecret, commitSecret), "joiner", groupContext, 32)
	member := extract(joiner, pskSecret)
	epoch := expand(member, "epoch", groupContext, 32)
	out := map[string][]byte{
		"joiner":  joiner,
		"welcome": expand(member, "welcome", nil, 32),
	}
	for _, l := range []string{"sender data", "encryption", "exporter", "external", "confirm", "membership", "resumption", "authentication", "init"} {
		out[l] = expand(epoch, l, nil, 32)
	}
	return out
}

// TestXWingKeySchedule runs several epochs of the 0x004D key schedule and
// compares every secret with the independent derivation.
func TestXWingKeySchedule(t *testing.T) {
	s := mustSuite(t, SuiteXWingChaCha20Poly1305SHA256Ed25519)
	initSecret := bytes.Repeat([]byte{1}, 32)
	for n := uint64(0); n < 4; n++ {
		gc := &GroupContext{
			Version: MLS10, CipherSuite: s.ID, GroupID: []byte("xwing group"), Epoch: n,
			TreeHash: bytes.Repeat([]byte{byte(n)}, 32), ConfirmedTranscriptHash: bytes.Repeat([]byte{byte(n + 9)}, 32),
		}
		ctx, err := gc.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		commit := bytes.Repeat([]byte{byte(0x30 + n)}, 32)
		psk := make([]byte, 32)
		if n%2 == 1 {
			psk, _ = s.PSKSecret([]PSKInput{{ID: ExternalPSKID([]byte("id"), []byte("nonce")), PSK: []byte("psk")}})
		}
		e, err := s.DeriveEpoch(initSecret, commit, psk, gc)
		if err != nil {
			t.Fatal(err)
		}
		want := independentEpoch(t, initSecret, commit, psk, ctx)
		for name, got := range map[string][]byte{
			"joiner": e.JoinerSecret, "welcome": e.WelcomeSecret, "sender data": e.SenderDataSecret,
			"encryption": e.EncryptionSecret, "exporter": e.ExporterSecret, "external": e.ExternalSecret,
			"confirm": e.ConfirmationKey, "membership": e.MembershipKey, "resumption": e.ResumptionPSK,
			"authentication": e.EpochAuthenticator, "init": e.InitSecret,
		} {
			if !bytes.Equal(got, want[name]) {
				t.Fatalf("epoch %d: %s = %x, want %x", n, name, got, want[name])
			}
		}
		pub, priv, err := s.ExternalKeyPair(e.ExternalSecret)
		if err != nil {
			t.Fatal(err)
		}
		if p2, err := s.HPKEPublicKey(priv); err != nil || !bytes.Equal(p2, pub) || len(pub) != 1216 {
			t.Fatalf("epoch %d: external key pair inconsistent: %v", n, err)
		}
		initSecret = e.InitSecret
	}
}
