package tokens

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

var t0 = time.Unix(1_760_000_000, 0)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newIssuer(t testing.TB, label string, c *clock) *Issuer {
	t.Helper()
	m := sha256.Sum256([]byte(label))
	i, err := NewIssuer(m[:], WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// issue runs the whole protocol through the wire encodings.
func issue(t testing.TB, iss *Issuer, pk *PublicKey, n int) ([]Token, error) {
	t.Helper()
	bl, req, err := Blind(pk, n)
	if err != nil {
		t.Fatal(err)
	}
	reqBytes, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	req2, err := ParseTokenRequest(reqBytes)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := iss.Issue(req2)
	if err != nil {
		return nil, err
	}
	respBytes, err := resp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := ParseTokenResponse(respBytes)
	if err != nil {
		t.Fatal(err)
	}
	return bl.Finalize(resp2)
}

func publicKey(t testing.TB, iss *Issuer, epoch uint32) *PublicKey {
	t.Helper()
	pk, err := iss.PublicKey(epoch)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pk.MarshalBinary()
	if err != nil || len(b) != PublicKeySize {
		t.Fatalf("public key encoding: %d bytes, %v", len(b), err)
	}
	pk2, err := ParsePublicKey(b)
	if err != nil || pk2.Epoch != epoch {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	return pk2
}

func TestRoundTrip(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	ep := iss.Epoch()
	if ep != uint32(t0.Unix()/86400) {
		t.Fatalf("epoch %d", ep)
	}
	toks, err := issue(t, iss, publicKey(t, iss, ep), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 10 {
		t.Fatalf("%d tokens", len(toks))
	}
	seen := map[[32]byte]bool{}
	for _, tok := range toks {
		b, err := tok.MarshalBinary()
		if err != nil || len(b) != TokenSize {
			t.Fatalf("token encoding: %d bytes, %v", len(b), err)
		}
		tok2, err := ParseToken(b)
		if err != nil || *tok2 != tok {
			t.Fatalf("ParseToken: %v", err)
		}
		if err := iss.Redeem(tok2); err != nil {
			t.Fatalf("Redeem: %v", err)
		}
		sk := SpendKey(tok2)
		if seen[sk] {
			t.Fatal("two tokens share a spend key")
		}
		seen[sk] = true
	}
	// A second issuer with the same master (another frontend) redeems too.
	if err := newIssuer(t, "master", c).Redeem(&toks[0]); err != nil {
		t.Fatalf("same master, other instance: %v", err)
	}
	// Still good in the next epoch, not in the one after.
	c.now = t0.Add(DefaultEpochLength)
	if err := iss.Redeem(&toks[1]); err != nil {
		t.Fatalf("previous epoch: %v", err)
	}
	c.now = t0.Add(2 * DefaultEpochLength)
	if err := iss.Redeem(&toks[2]); !errors.Is(err, ErrEpoch) {
		t.Fatalf("expired epoch: %v, want ErrEpoch", err)
	}
}

func TestSpendKey(t *testing.T) {
	tok := Token{Epoch: 7}
	tok.Input[0] = 1
	want := sha256.Sum256(append([]byte("qpc/1 token spend\x00\x00\x00\x07\x01"), make([]byte, 31)...))
	if SpendKey(&tok) != want {
		t.Fatal("SpendKey is not SHA-256(label || epoch || input)")
	}
	other := tok
	other.Output[0] = 9 // the output does not enter the key: one input, one spend
	if SpendKey(&other) != want {
		t.Fatal("SpendKey depends on the output")
	}
	other = tok
	other.Epoch = 8
	if SpendKey(&other) == want {
		t.Fatal("SpendKey ignores the epoch")
	}
}

func TestRedeemRejects(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	ep := iss.Epoch()
	toks, err := issue(t, iss, publicKey(t, iss, ep), 2)
	if err != nil {
		t.Fatal(err)
	}
	good := toks[0]
	forged := good
	rand.Read(forged.Output[:])
	flipped := good
	flipped.Output[63] ^= 1
	swapped := good
	swapped.Input = toks[1].Input
	wrongEpoch := good
	wrongEpoch.Epoch = ep - 1
	future := good
	future.Epoch = ep + 1
	ancient := good
	ancient.Epoch = ep - 2

	other := newIssuer(t, "another master", c)
	otherToks, err := issue(t, other, publicKey(t, other, ep), 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		iss  *Issuer
		tok  Token
		want error
	}{
		{"forged_random_output", iss, forged, ErrInvalid},
		{"flipped_output_bit", iss, flipped, ErrInvalid},
		{"output_of_other_input", iss, swapped, ErrInvalid},
		{"relabelled_previous_epoch", iss, wrongEpoch, ErrInvalid},
		{"future_epoch", iss, future, ErrEpoch},
		{"expired_epoch", iss, ancient, ErrEpoch},
		{"token_of_other_issuer", iss, otherToks[0], ErrInvalid},
		{"our_token_at_other_issuer", other, good, ErrInvalid},
	}
	for _, c := range cases {
		if err := c.iss.Redeem(&c.tok); !errors.Is(err, c.want) {
			t.Errorf("%s: Redeem = %v, want %v", c.name, err, c.want)
		}
	}
	if err := iss.Redeem(&good); err != nil {
		t.Fatalf("good token: %v", err)
	}
	// Epoch 0 has no previous epoch.
	iss0 := newIssuer(t, "master", &clock{time.Unix(10, 0)})
	if err := iss0.Redeem(&Token{Epoch: ^uint32(0)}); !errors.Is(err, ErrEpoch) {
		t.Errorf("epoch 0, token of epoch -1: %v", err)
	}
}

func TestIssueRejects(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	ep := iss.Epoch()
	pk := publicKey(t, iss, ep)
	_, req, err := Blind(pk, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Issue(&TokenRequest{Epoch: ep - 1, Blinded: req.Blinded}); !errors.Is(err, ErrEpoch) {
		t.Errorf("old epoch: %v", err)
	}
	if _, err := iss.Issue(&TokenRequest{Epoch: ep + 1, Blinded: req.Blinded}); !errors.Is(err, ErrEpoch) {
		t.Errorf("future epoch: %v", err)
	}
	if _, err := iss.Issue(&TokenRequest{Epoch: ep}); !errors.Is(err, ErrBatch) {
		t.Errorf("empty batch: %v", err)
	}
	big := make([]Element, MaxBatch+1)
	for j := range big {
		big[j] = req.Blinded[0]
	}
	if _, err := iss.Issue(&TokenRequest{Epoch: ep, Blinded: big}); !errors.Is(err, ErrBatch) {
		t.Errorf("batch of 101: %v", err)
	}
	if _, err := (&TokenRequest{Epoch: ep, Blinded: big}).MarshalBinary(); !errors.Is(err, ErrBatch) {
		t.Errorf("marshal batch of 101: %v", err)
	}
	if _, err := iss.Issue(&TokenRequest{Epoch: ep, Blinded: big[:MaxBatch]}); err != nil {
		t.Errorf("batch of 100: %v", err)
	}
	if _, _, err := Blind(pk, MaxBatch+1); !errors.Is(err, ErrBatch) {
		t.Errorf("Blind(101): %v", err)
	}
	if _, _, err := Blind(pk, 0); !errors.Is(err, ErrBatch) {
		t.Errorf("Blind(0): %v", err)
	}
	var identity Element // the all-zero encoding is the identity
	if _, err := iss.Issue(&TokenRequest{Epoch: ep, Blinded: []Element{identity}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("identity element: %v", err)
	}
	if _, err := NewIssuer(make([]byte, 31)); err == nil {
		t.Error("31-byte master accepted")
	}
	if _, err := NewIssuer(make([]byte, 32), WithEpochLength(time.Millisecond)); err == nil {
		t.Error("1 ms epoch accepted")
	}
}

func TestFinalizeRejects(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	evil := newIssuer(t, "per-user key", c)
	ep := iss.Epoch()
	pk := publicKey(t, iss, ep)

	// A response made with another key (the server tagging this user)
	// fails the proof against the published key.
	bl, req, err := Blind(pk, 5)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := evil.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Finalize(resp); !errors.Is(err, ErrProof) {
		t.Errorf("other key: %v, want ErrProof", err)
	}

	good, err := iss.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(r *TokenResponse)) *TokenResponse {
		r := &TokenResponse{Epoch: good.Epoch, Evaluated: append([]Element(nil), good.Evaluated...), Proof: good.Proof}
		f(r)
		return r
	}
	// Another request's valid evaluations, with their own valid proof.
	_, req2, _ := Blind(pk, 5)
	other, err := iss.Issue(req2)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		resp *TokenResponse
		want error
	}{
		{"proof_of_other_request", mutate(func(r *TokenResponse) { r.Proof = other.Proof }), ErrProof},
		{"evaluations_of_other_request", other, ErrProof},
		{"swapped_evaluations", mutate(func(r *TokenResponse) { r.Evaluated[0], r.Evaluated[1] = r.Evaluated[1], r.Evaluated[0] }), ErrProof},
		{"replaced_evaluation", mutate(func(r *TokenResponse) { r.Evaluated[2] = req.Blinded[2] }), ErrProof},
		{"flipped_proof", mutate(func(r *TokenResponse) { r.Proof[0] ^= 1 }), ErrProof},
		{"wrong_epoch", mutate(func(r *TokenResponse) { r.Epoch++ }), ErrEpoch},
		{"short_batch", mutate(func(r *TokenResponse) { r.Evaluated = r.Evaluated[:4] }), ErrBatch},
		{"identity_evaluation", mutate(func(r *TokenResponse) { r.Evaluated[0] = Element{} }), ErrMalformed},
		{"noncanonical_proof_scalar", mutate(func(r *TokenResponse) { r.Proof[31] = 0xff }), ErrMalformed},
	}
	for _, c := range cases {
		if toks, err := bl.Finalize(c.resp); !errors.Is(err, c.want) || toks != nil {
			t.Errorf("%s: Finalize = %v, want %v", c.name, err, c.want)
		}
	}
	toks, err := bl.Finalize(good)
	if err != nil || len(toks) != 5 {
		t.Fatalf("good response: %v", err)
	}
	// A key for another epoch does not verify this epoch's proof either.
	pkNext := publicKey(t, iss, ep+1)
	bl2, req3, _ := Blind(pkNext, 1)
	req3.Epoch = ep
	r3, err := iss.Issue(req3)
	if err != nil {
		t.Fatal(err)
	}
	r3.Epoch = ep + 1
	if _, err := bl2.Finalize(r3); !errors.Is(err, ErrProof) {
		t.Errorf("proof under the previous epoch's key: %v, want ErrProof", err)
	}
}

func TestMalformedEncodings(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	ep := iss.Epoch()
	pk := publicKey(t, iss, ep)
	bl, req, _ := Blind(pk, 2)
	resp, _ := iss.Issue(req)
	toks, err := bl.Finalize(resp)
	if err != nil {
		t.Fatal(err)
	}
	tokB, _ := toks[0].MarshalBinary()
	reqB, _ := req.MarshalBinary()
	respB, _ := resp.MarshalBinary()
	pkB, _ := pk.MarshalBinary()
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

	tokenCases := map[string][]byte{
		"empty":     nil,
		"short":     tokB[:TokenSize-1],
		"long":      cat(tokB, []byte{0}),
		"version_0": set(tokB, 0, 0),
		"version_2": set(tokB, 0, 2),
	}
	for name, b := range tokenCases {
		if _, err := ParseToken(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("token %s: %v", name, err)
		}
	}
	// Element list of 101 elements, correctly length-prefixed.
	many := make([]byte, 0, 101*32)
	for range 101 {
		many = append(many, req.Blinded[0][:]...)
	}
	reqCases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":            {nil, ErrMalformed},
		"version_2":        {set(reqB, 0, 2), ErrMalformed},
		"truncated":        {reqB[:len(reqB)-1], ErrMalformed},
		"trailing":         {cat(reqB, []byte{0}), ErrMalformed},
		"list_not_x32":     {cat(reqB[:5], []byte{0, 33}, make([]byte, 33)), ErrMalformed},
		"empty_list":       {cat(reqB[:5], []byte{0, 0}), ErrBatch},
		"101_elements":     {cat(reqB[:5], []byte{byte(len(many) >> 8), byte(len(many))}, many), ErrBatch},
		"identity_element": {cat(reqB[:5], []byte{0, 32}, make([]byte, 32)), ErrMalformed},
		"noncanonical":     {cat(reqB[:5], []byte{0, 32}, bytes.Repeat([]byte{0xff}, 32)), ErrMalformed},
		"no_list":          {reqB[:5], ErrMalformed},
	}
	for name, c := range reqCases {
		if _, err := ParseTokenRequest(c.b); !errors.Is(err, c.want) {
			t.Errorf("request %s: %v, want %v", name, err, c.want)
		}
	}
	respCases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":             {nil, ErrMalformed},
		"version_0":         {set(respB, 0, 0), ErrMalformed},
		"no_proof":          {respB[:len(respB)-ProofSize], ErrMalformed},
		"short_proof":       {respB[:len(respB)-1], ErrMalformed},
		"trailing":          {cat(respB, []byte{0}), ErrMalformed},
		"noncanonical_s":    {set(respB, len(respB)-1, 0xff), ErrMalformed},
		"101_elements":      {cat(respB[:5], []byte{byte(len(many) >> 8), byte(len(many))}, many, resp.Proof[:]), ErrBatch},
		"identity_evaluate": {cat(respB[:5], []byte{0, 32}, make([]byte, 32), resp.Proof[:]), ErrMalformed},
	}
	for name, c := range respCases {
		if _, err := ParseTokenResponse(c.b); !errors.Is(err, c.want) {
			t.Errorf("response %s: %v, want %v", name, err, c.want)
		}
	}
	for name, b := range map[string][]byte{
		"empty": nil, "short": pkB[:PublicKeySize-1], "long": cat(pkB, []byte{0}), "version_2": set(pkB, 0, 2),
		"identity": cat(pkB[:5], make([]byte, 32)), "noncanonical": cat(pkB[:5], bytes.Repeat([]byte{0xff}, 32)),
	} {
		if _, err := ParsePublicKey(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("public key %s: %v", name, err)
		}
	}
	// Good encodings re-encode to the same bytes.
	for _, b := range [][]byte{reqB, respB} {
		var got []byte
		if r, err := ParseTokenRequest(b); err == nil {
			got, _ = r.MarshalBinary()
		} else if r, err := ParseTokenResponse(b); err == nil {
			got, _ = r.MarshalBinary()
		}
		if !bytes.Equal(got, b) {
			t.Error("encoding is not canonical")
		}
	}
}

func FuzzTokenDecode(f *testing.F) {
	f.Add(make([]byte, TokenSize))
	f.Add(append([]byte{Version}, make([]byte, TokenSize-1)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseToken(b)
		if err != nil {
			return
		}
		again, err := tok.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

func fuzzSeeds(f *testing.F) (req, resp []byte) {
	m := sha256.Sum256([]byte("fuzz"))
	iss, _ := NewIssuer(m[:], WithClock(func() time.Time { return t0 }))
	pk, _ := iss.PublicKey(iss.Epoch())
	_, r, err := Blind(pk, 3)
	if err != nil {
		f.Fatal(err)
	}
	rs, err := iss.Issue(r)
	if err != nil {
		f.Fatal(err)
	}
	req, _ = r.MarshalBinary()
	resp, _ = rs.MarshalBinary()
	return req, resp
}

func FuzzTokenRequestDecode(f *testing.F) {
	req, resp := fuzzSeeds(f)
	f.Add(req)
	f.Add(resp)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseTokenRequest(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs")
		}
	})
}

func FuzzTokenResponseDecode(f *testing.F) {
	req, resp := fuzzSeeds(f)
	f.Add(req)
	f.Add(resp)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseTokenResponse(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs")
		}
	})
}

// Frontends share one Issuer across goroutines; run with -race.
func TestConcurrent(t *testing.T) {
	c := &clock{t0}
	iss := newIssuer(t, "master", c)
	ep := iss.Epoch()
	pk := publicKey(t, iss, ep)
	done := make(chan error)
	for g := range 4 {
		go func() {
			// No t.Fatal off the test goroutine: errors go to done.
			bl, req, err := Blind(pk, 3)
			var resp *TokenResponse
			if err == nil {
				resp, err = iss.Issue(req)
			}
			var toks []Token
			if err == nil {
				toks, err = bl.Finalize(resp)
			}
			if err == nil {
				err = iss.Redeem(&toks[0])
			}
			if err == nil {
				// Touch other epochs' keys to exercise the cache.
				_, err = iss.PublicKey(ep + uint32(g) + 1)
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
