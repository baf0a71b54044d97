package accountstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/server/accounts"
)

// Opener returns a fresh, empty store for one subtest and arranges its
// cleanup.
type Opener func(t *testing.T) accounts.Store

// t0 is a whole hour, as the service's coarse times are.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var bg = context.Background()

// Run runs every conformance subtest against stores made by open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s accounts.Store)
	}{
		{"RegisterAndRead", testRegisterAndRead},
		{"RegisterTaken", testRegisterTaken},
		{"RegisterRefCollision", testRegisterRefCollision},
		{"RegisterConcurrent", testRegisterConcurrent},
		{"SessionExpiry", testSessionExpiry},
		{"PurgeSessions", testPurgeSessions},
		{"LoginOneSessionPerDevice", testLoginOneSessionPerDevice},
		{"LoginMaxDevices", testLoginMaxDevices},
		{"LoginStaleAccount", testLoginStaleAccount},
		{"TouchSession", testTouchSession},
		{"DevicesOrderAndScope", testDevicesOrderAndScope},
		{"RevokeDevice", testRevokeDevice},
		{"ChangePassword", testChangePassword},
		{"DeleteAccountRemovesEverything", testDeleteAccount},
		{"QuotaPerEpoch", testQuotaPerEpoch},
		{"QuotaOldEpochsDropped", testQuotaOldEpochs},
		{"QuotaConcurrent", testQuotaConcurrent},
		{"KeyPackagesFIFO", testKeyPackagesFIFO},
		{"KeyPackagesPoolFull", testKeyPackagesPoolFull},
		{"KeyPackagesConcurrentTakes", testKeyPackagesConcurrentTakes},
		{"CancelledContext", testCancelledContext},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// ---- helpers ----

func random[T ~[16]byte | ~[32]byte | ~[account.RegistrationRecordSize]byte]() T {
	var v T
	switch p := any(&v).(type) {
	case *accounts.AccountRef:
		rand.Read(p[:])
	case *account.DeviceID:
		rand.Read(p[:])
	case *accounts.CredID:
		rand.Read(p[:])
	case *accounts.TokenHash:
		rand.Read(p[:])
	case *[account.RegistrationRecordSize]byte:
		rand.Read(p[:])
	default:
		panic(fmt.Sprintf("random: %T", p))
	}
	return v
}

// acct is a registered account and its first session.
type acct struct {
	cred accounts.CredID
	a    accounts.StoredAccount
	s    accounts.NewSession
}

func newSession(device account.DeviceID, name string, now time.Time) accounts.NewSession {
	return accounts.NewSession{
		Hash:       random[accounts.TokenHash](),
		Device:     device,
		DeviceName: name,
		Now:        now,
		Expiry:     now.Add(30 * 24 * time.Hour),
	}
}

func register(t *testing.T, s accounts.Store) acct {
	t.Helper()
	r := acct{
		cred: random[accounts.CredID](),
		a:    accounts.StoredAccount{Ref: random[accounts.AccountRef](), Created: t0, Record: random[[account.RegistrationRecordSize]byte]()},
		s:    newSession(random[account.DeviceID](), "first", t0),
	}
	if err := s.Register(bg, r.cred, r.a, r.s); err != nil {
		t.Fatalf("Register: %v", err)
	}
	return r
}

func login(t *testing.T, s accounts.Store, r acct, device account.DeviceID, name string, now time.Time) accounts.NewSession {
	t.Helper()
	ns := newSession(device, name, now)
	if err := s.Login(bg, r.cred, r.a.Ref, ns, account.MaxDevices); err != nil {
		t.Fatalf("Login: %v", err)
	}
	return ns
}

func wantSession(t *testing.T, s accounts.Store, h accounts.TokenHash, now time.Time, a accounts.AccountRef, d account.DeviceID) accounts.StoredSession {
	t.Helper()
	got, err := s.Session(bg, h, now)
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	if got.Account != a || got.Device != d {
		t.Fatalf("Session = account %x device %x, want %x %x", got.Account, got.Device, a, d)
	}
	return got
}

func wantNoSession(t *testing.T, s accounts.Store, h accounts.TokenHash, now time.Time) {
	t.Helper()
	if _, err := s.Session(bg, h, now); !errors.Is(err, accounts.ErrAuth) {
		t.Fatalf("Session of a revoked/unknown/expired token: %v, want ErrAuth", err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func devices(t *testing.T, s accounts.Store, ref accounts.AccountRef) []accounts.Device {
	t.Helper()
	d, err := s.Devices(bg, ref)
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	return d
}

// ---- accounts ----

func testRegisterAndRead(t *testing.T, s accounts.Store) {
	r := register(t, s)
	got, err := s.Account(bg, r.cred)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != r.a.Ref || got.Record != r.a.Record || !got.Created.Equal(r.a.Created) {
		t.Fatalf("Account = %+v, want %+v", got, r.a)
	}
	cred, err := s.Credential(bg, r.a.Ref)
	if err != nil || cred != r.cred {
		t.Fatalf("Credential = %x, %v; want %x", cred, err, r.cred)
	}
	_, err = s.Account(bg, random[accounts.CredID]())
	wantErr(t, "Account(unknown)", err, accounts.ErrNotFound)
	_, err = s.Credential(bg, random[accounts.AccountRef]())
	wantErr(t, "Credential(unknown)", err, accounts.ErrNotFound)
	// The first device and its session came with the account.
	sess := wantSession(t, s, r.s.Hash, t0, r.a.Ref, r.s.Device)
	if !sess.Expiry.Equal(r.s.Expiry) || !sess.LastUsed.Equal(t0) {
		t.Fatalf("session times %v %v, want %v %v", sess.Expiry, sess.LastUsed, r.s.Expiry, t0)
	}
	d := devices(t, s, r.a.Ref)
	if len(d) != 1 || d[0].ID != r.s.Device || d[0].Name != "first" || !d[0].Created.Equal(t0) || !d[0].LastUsed.Equal(t0) {
		t.Fatalf("Devices = %+v", d)
	}
}

func testRegisterTaken(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := accounts.StoredAccount{Ref: random[accounts.AccountRef](), Created: t0, Record: random[[account.RegistrationRecordSize]byte]()}
	ns := newSession(random[account.DeviceID](), "second", t0)
	wantErr(t, "Register of a taken credential", s.Register(bg, r.cred, other, ns), accounts.ErrTaken)
	// Nothing of the refused registration was stored.
	got, err := s.Account(bg, r.cred)
	if err != nil || got.Ref != r.a.Ref || got.Record != r.a.Record {
		t.Fatalf("the first registration changed: %+v, %v", got, err)
	}
	_, err = s.Credential(bg, other.Ref)
	wantErr(t, "Credential of the refused account", err, accounts.ErrNotFound)
	wantNoSession(t, s, ns.Hash, t0)
	if d := devices(t, s, other.Ref); len(d) != 0 {
		t.Fatalf("the refused account has devices %+v", d)
	}
}

func testRegisterRefCollision(t *testing.T, s accounts.Store) {
	r := register(t, s)
	cred := random[accounts.CredID]()
	a := accounts.StoredAccount{Ref: r.a.Ref, Created: t0, Record: random[[account.RegistrationRecordSize]byte]()}
	ns := newSession(random[account.DeviceID](), "x", t0)
	wantErr(t, "Register of a taken AccountRef", s.Register(bg, cred, a, ns), accounts.ErrStorage)
	_, err := s.Account(bg, cred)
	wantErr(t, "Account after a refused registration", err, accounts.ErrNotFound)
	wantNoSession(t, s, ns.Hash, t0)
	if c, err := s.Credential(bg, r.a.Ref); err != nil || c != r.cred {
		t.Fatalf("Credential of the first account = %x, %v", c, err)
	}
	if d := devices(t, s, r.a.Ref); len(d) != 1 {
		t.Fatalf("the first account has %d devices", len(d))
	}
}

func testRegisterConcurrent(t *testing.T, s accounts.Store) {
	const n = 8
	cred := random[accounts.CredID]()
	var wg sync.WaitGroup
	errs := make([]error, n)
	refs := make([]accounts.AccountRef, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refs[i] = random[accounts.AccountRef]()
			a := accounts.StoredAccount{Ref: refs[i], Created: t0, Record: random[[account.RegistrationRecordSize]byte]()}
			errs[i] = s.Register(bg, cred, a, newSession(random[account.DeviceID](), "d", t0))
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if won >= 0 {
				t.Fatalf("registrations %d and %d of one credential both succeeded", won, i)
			}
			won = i
		case !errors.Is(err, accounts.ErrTaken):
			t.Fatalf("registration %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no registration succeeded")
	}
	got, err := s.Account(bg, cred)
	if err != nil || got.Ref != refs[won] {
		t.Fatalf("Account = %x, %v; want the winner %x", got.Ref, err, refs[won])
	}
}

// ---- sessions ----

func testSessionExpiry(t *testing.T, s accounts.Store) {
	r := register(t, s)
	exp := r.s.Expiry
	wantSession(t, s, r.s.Hash, exp.Add(-time.Second), r.a.Ref, r.s.Device)
	wantNoSession(t, s, r.s.Hash, exp)
	wantNoSession(t, s, r.s.Hash, exp.Add(time.Hour))
	wantNoSession(t, s, random[accounts.TokenHash](), t0)
	// An expired session cannot be touched, nor used to change the
	// password or delete the account.
	wantErr(t, "TouchSession expired", s.TouchSession(bg, r.s.Hash, exp, exp), accounts.ErrAuth)
	wantErr(t, "ChangePassword expired", s.ChangePassword(bg, r.s.Hash, exp, random[[account.RegistrationRecordSize]byte]()), accounts.ErrAuth)
	wantErr(t, "DeleteAccount expired", s.DeleteAccount(bg, r.s.Hash, exp), accounts.ErrAuth)
	if got, err := s.Account(bg, r.cred); err != nil || got.Record != r.a.Record {
		t.Fatalf("account after refused operations: %+v, %v", got, err)
	}
}

func testPurgeSessions(t *testing.T, s accounts.Store) {
	r := register(t, s)
	late := login(t, s, r, random[account.DeviceID](), "late", t0.Add(48*time.Hour)) // expires two days later
	if n, err := s.PurgeSessions(bg, r.s.Expiry.Add(-time.Second)); err != nil || n != 0 {
		t.Fatalf("PurgeSessions before any expiry = %d, %v", n, err)
	}
	if n, err := s.PurgeSessions(bg, r.s.Expiry); err != nil || n != 1 {
		t.Fatalf("PurgeSessions at the first expiry = %d, %v; want 1", n, err)
	}
	// The purged session is gone even for a clock before its expiry.
	wantNoSession(t, s, r.s.Hash, t0)
	wantSession(t, s, late.Hash, r.s.Expiry, r.a.Ref, late.Device)
	if n, err := s.PurgeSessions(bg, r.s.Expiry); err != nil || n != 0 {
		t.Fatalf("second PurgeSessions = %d, %v", n, err)
	}
	// The device stays listed (it logs in again).
	if d := devices(t, s, r.a.Ref); len(d) != 2 {
		t.Fatalf("%d devices after the purge, want 2", len(d))
	}
	// Its new login works and is the device's only session.
	again := login(t, s, r, r.s.Device, "first", r.s.Expiry)
	wantSession(t, s, again.Hash, r.s.Expiry, r.a.Ref, r.s.Device)
}

func testLoginOneSessionPerDevice(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := login(t, s, r, random[account.DeviceID](), "other", t0)
	t1 := t0.Add(3 * time.Hour)
	again := login(t, s, r, r.s.Device, "renamed", t1)
	wantNoSession(t, s, r.s.Hash, t1)
	wantSession(t, s, again.Hash, t1, r.a.Ref, r.s.Device)
	wantSession(t, s, other.Hash, t1, r.a.Ref, other.Device)
	d := devices(t, s, r.a.Ref)
	if len(d) != 2 {
		t.Fatalf("%d devices, want 2", len(d))
	}
	for _, dev := range d {
		if dev.ID != r.s.Device {
			continue
		}
		if dev.Name != "renamed" || !dev.Created.Equal(t0) || !dev.LastUsed.Equal(t1) {
			t.Fatalf("re-logged device = %+v; want renamed, created %v, last used %v", dev, t0, t1)
		}
	}
}

func testLoginMaxDevices(t *testing.T, s accounts.Store) {
	const maxDev = 3
	r := register(t, s)
	var last accounts.NewSession
	for range maxDev - 1 {
		last = newSession(random[account.DeviceID](), "d", t0)
		if err := s.Login(bg, r.cred, r.a.Ref, last, maxDev); err != nil {
			t.Fatalf("Login under the limit: %v", err)
		}
	}
	extra := newSession(random[account.DeviceID](), "extra", t0)
	wantErr(t, "Login of a device over the limit", s.Login(bg, r.cred, r.a.Ref, extra, maxDev), accounts.ErrTooManyDevices)
	wantNoSession(t, s, extra.Hash, t0)
	if d := devices(t, s, r.a.Ref); len(d) != maxDev {
		t.Fatalf("%d devices, want %d", len(d), maxDev)
	}
	// A device the account has logs in again at the limit.
	again := newSession(last.Device, "d", t0)
	if err := s.Login(bg, r.cred, r.a.Ref, again, maxDev); err != nil {
		t.Fatalf("Login of a known device at the limit: %v", err)
	}
	// A revoked device frees a place.
	if err := s.RevokeDevice(bg, r.a.Ref, last.Device); err != nil {
		t.Fatal(err)
	}
	if err := s.Login(bg, r.cred, r.a.Ref, extra, maxDev); err != nil {
		t.Fatalf("Login after a revocation: %v", err)
	}
}

func testLoginStaleAccount(t *testing.T, s accounts.Store) {
	r := register(t, s)
	ns := newSession(random[account.DeviceID](), "x", t0)
	wantErr(t, "Login with another AccountRef", s.Login(bg, r.cred, random[accounts.AccountRef](), ns, account.MaxDevices), accounts.ErrAuth)
	wantErr(t, "Login of an unknown credential", s.Login(bg, random[accounts.CredID](), r.a.Ref, ns, account.MaxDevices), accounts.ErrAuth)
	wantNoSession(t, s, ns.Hash, t0)
	if d := devices(t, s, r.a.Ref); len(d) != 1 {
		t.Fatalf("%d devices after refused logins, want 1", len(d))
	}
	// Deleted and registered anew: a login begun before still fails.
	if err := s.DeleteAccount(bg, r.s.Hash, t0); err != nil {
		t.Fatal(err)
	}
	fresh := accounts.StoredAccount{Ref: random[accounts.AccountRef](), Created: t0, Record: random[[account.RegistrationRecordSize]byte]()}
	if err := s.Register(bg, r.cred, fresh, newSession(random[account.DeviceID](), "new", t0)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Login begun before a re-registration", s.Login(bg, r.cred, r.a.Ref, ns, account.MaxDevices), accounts.ErrAuth)
	wantNoSession(t, s, ns.Hash, t0)
}

func testTouchSession(t *testing.T, s accounts.Store) {
	r := register(t, s)
	t1 := t0.Add(5 * time.Hour)
	if err := s.TouchSession(bg, r.s.Hash, t1, t1); err != nil {
		t.Fatal(err)
	}
	if got := wantSession(t, s, r.s.Hash, t1, r.a.Ref, r.s.Device); !got.LastUsed.Equal(t1) || !got.Expiry.Equal(r.s.Expiry) {
		t.Fatalf("touched session = %+v; last used %v, expiry %v", got, t1, r.s.Expiry)
	}
	if d := devices(t, s, r.a.Ref); !d[0].LastUsed.Equal(t1) || !d[0].Created.Equal(t0) {
		t.Fatalf("touched device = %+v", d[0])
	}
	wantErr(t, "TouchSession unknown", s.TouchSession(bg, random[accounts.TokenHash](), t1, t1), accounts.ErrAuth)
	if err := s.RevokeDevice(bg, r.a.Ref, r.s.Device); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "TouchSession revoked", s.TouchSession(bg, r.s.Hash, t1, t1), accounts.ErrAuth)
}

func testDevicesOrderAndScope(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := register(t, s)
	ids := []account.DeviceID{r.s.Device}
	for range 5 {
		d := random[account.DeviceID]()
		login(t, s, r, d, "d", t0)
		ids = append(ids, d)
	}
	slices.SortFunc(ids, func(a, b account.DeviceID) int { return bytes.Compare(a[:], b[:]) })
	got := devices(t, s, r.a.Ref)
	if len(got) != len(ids) {
		t.Fatalf("%d devices, want %d", len(got), len(ids))
	}
	for i := range ids {
		if got[i].ID != ids[i] {
			t.Fatalf("device %d = %x, want %x (ordered by ID)", i, got[i].ID, ids[i])
		}
	}
	if d := devices(t, s, other.a.Ref); len(d) != 1 || d[0].ID != other.s.Device {
		t.Fatalf("the other account's devices = %+v", d)
	}
	if d := devices(t, s, random[accounts.AccountRef]()); len(d) != 0 {
		t.Fatalf("an unknown account has devices %+v", d)
	}
}

func testRevokeDevice(t *testing.T, s accounts.Store) {
	r := register(t, s)
	keep := login(t, s, r, random[account.DeviceID](), "keep", t0)
	if err := s.RevokeDevice(bg, r.a.Ref, r.s.Device); err != nil {
		t.Fatal(err)
	}
	wantNoSession(t, s, r.s.Hash, t0)
	wantSession(t, s, keep.Hash, t0, r.a.Ref, keep.Device)
	if d := devices(t, s, r.a.Ref); len(d) != 1 || d[0].ID != keep.Device {
		t.Fatalf("devices after revocation = %+v", d)
	}
	wantErr(t, "RevokeDevice again", s.RevokeDevice(bg, r.a.Ref, r.s.Device), accounts.ErrNotFound)
	// A device is revoked only within its own account.
	other := register(t, s)
	wantErr(t, "RevokeDevice of another account's device", s.RevokeDevice(bg, r.a.Ref, other.s.Device), accounts.ErrNotFound)
	wantSession(t, s, other.s.Hash, t0, other.a.Ref, other.s.Device)
}

func testChangePassword(t *testing.T, s accounts.Store) {
	r := register(t, s)
	o1 := login(t, s, r, random[account.DeviceID](), "o1", t0)
	o2 := login(t, s, r, random[account.DeviceID](), "o2", t0)
	bystander := register(t, s)
	rec := random[[account.RegistrationRecordSize]byte]()
	wantErr(t, "ChangePassword unknown session", s.ChangePassword(bg, random[accounts.TokenHash](), t0, rec), accounts.ErrAuth)
	if err := s.ChangePassword(bg, o1.Hash, t0, rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Account(bg, r.cred)
	if err != nil || got.Record != rec || got.Ref != r.a.Ref || !got.Created.Equal(t0) {
		t.Fatalf("account after the change = %+v, %v", got, err)
	}
	wantSession(t, s, o1.Hash, t0, r.a.Ref, o1.Device)
	wantNoSession(t, s, r.s.Hash, t0)
	wantNoSession(t, s, o2.Hash, t0)
	wantSession(t, s, bystander.s.Hash, t0, bystander.a.Ref, bystander.s.Device)
	// The devices stay listed.
	if d := devices(t, s, r.a.Ref); len(d) != 3 {
		t.Fatalf("%d devices after the change, want 3", len(d))
	}
}

func testDeleteAccount(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := login(t, s, r, random[account.DeviceID](), "o", t0)
	bystander := register(t, s)
	for _, a := range []acct{r, bystander} {
		if err := s.ConsumeQuota(bg, a.a.Ref, 7, 3, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddKeyPackages(bg, a.a.Ref, [][]byte{[]byte("kp1"), []byte("kp2")}, 10); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, "DeleteAccount unknown session", s.DeleteAccount(bg, random[accounts.TokenHash](), t0), accounts.ErrAuth)
	if err := s.DeleteAccount(bg, other.Hash, t0); err != nil {
		t.Fatal(err)
	}
	_, err := s.Account(bg, r.cred)
	wantErr(t, "Account after deletion", err, accounts.ErrNotFound)
	_, err = s.Credential(bg, r.a.Ref)
	wantErr(t, "Credential after deletion", err, accounts.ErrNotFound)
	wantNoSession(t, s, r.s.Hash, t0)
	wantNoSession(t, s, other.Hash, t0)
	if d := devices(t, s, r.a.Ref); len(d) != 0 {
		t.Fatalf("devices after deletion: %+v", d)
	}
	if n, err := s.QuotaUsed(bg, r.a.Ref, 7); err != nil || n != 0 {
		t.Fatalf("QuotaUsed after deletion = %d, %v", n, err)
	}
	wantErr(t, "ConsumeQuota after deletion", s.ConsumeQuota(bg, r.a.Ref, 7, 1, 10), accounts.ErrNotFound)
	_, err = s.AddKeyPackages(bg, r.a.Ref, nil, 10)
	wantErr(t, "AddKeyPackages after deletion", err, accounts.ErrNotFound)
	if kp, err := s.TakeKeyPackage(bg, r.cred); err != nil || kp != nil {
		t.Fatalf("TakeKeyPackage after deletion = %q, %v", kp, err)
	}
	// The username is free, and a new account under it, even with the old
	// AccountRef, inherits nothing.
	again := accounts.StoredAccount{Ref: r.a.Ref, Created: t0.Add(time.Hour), Record: random[[account.RegistrationRecordSize]byte]()}
	ns := newSession(r.s.Device, "new", t0.Add(time.Hour))
	if err := s.Register(bg, r.cred, again, ns); err != nil {
		t.Fatalf("Register after deletion: %v", err)
	}
	if n, err := s.QuotaUsed(bg, r.a.Ref, 7); err != nil || n != 0 {
		t.Fatalf("the new account inherited a quota count %d, %v", n, err)
	}
	if n, err := s.AddKeyPackages(bg, r.a.Ref, nil, 10); err != nil || n != 0 {
		t.Fatalf("the new account inherited %d KeyPackages, %v", n, err)
	}
	if d := devices(t, s, r.a.Ref); len(d) != 1 || d[0].Name != "new" {
		t.Fatalf("the new account's devices = %+v", d)
	}
	wantNoSession(t, s, other.Hash, t0)
	// The bystander kept everything.
	wantSession(t, s, bystander.s.Hash, t0, bystander.a.Ref, bystander.s.Device)
	if n, err := s.QuotaUsed(bg, bystander.a.Ref, 7); err != nil || n != 3 {
		t.Fatalf("bystander's quota = %d, %v", n, err)
	}
	if kp, err := s.TakeKeyPackage(bg, bystander.cred); err != nil || string(kp) != "kp1" {
		t.Fatalf("bystander's KeyPackage = %q, %v", kp, err)
	}
}

// ---- quota ----

func testQuotaPerEpoch(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := register(t, s)
	if err := s.ConsumeQuota(bg, r.a.Ref, 5, 6, 10); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "ConsumeQuota over the limit", s.ConsumeQuota(bg, r.a.Ref, 5, 5, 10), accounts.ErrQuota)
	if n, _ := s.QuotaUsed(bg, r.a.Ref, 5); n != 6 {
		t.Fatalf("a refused take changed the count to %d, want 6", n)
	}
	if err := s.ConsumeQuota(bg, r.a.Ref, 5, 4, 10); err != nil {
		t.Fatalf("ConsumeQuota up to the limit exactly: %v", err)
	}
	wantErr(t, "ConsumeQuota of a spent epoch", s.ConsumeQuota(bg, r.a.Ref, 5, 1, 10), accounts.ErrQuota)
	// Another epoch and another account have their own counts.
	if err := s.ConsumeQuota(bg, r.a.Ref, 6, 10, 10); err != nil {
		t.Fatalf("next epoch: %v", err)
	}
	if err := s.ConsumeQuota(bg, other.a.Ref, 5, 10, 10); err != nil {
		t.Fatalf("other account: %v", err)
	}
	wantErr(t, "ConsumeQuota with limit 0", s.ConsumeQuota(bg, other.a.Ref, 9, 1, 0), accounts.ErrQuota)
	wantErr(t, "ConsumeQuota unknown account", s.ConsumeQuota(bg, random[accounts.AccountRef](), 5, 1, 10), accounts.ErrNotFound)
	for _, c := range []struct {
		ref   accounts.AccountRef
		epoch uint32
		want  int
	}{{r.a.Ref, 5, 10}, {r.a.Ref, 6, 10}, {other.a.Ref, 5, 10}, {other.a.Ref, 6, 0}, {random[accounts.AccountRef](), 5, 0}} {
		if n, err := s.QuotaUsed(bg, c.ref, c.epoch); err != nil || n != c.want {
			t.Fatalf("QuotaUsed(%x, %d) = %d, %v; want %d", c.ref[:4], c.epoch, n, err, c.want)
		}
	}
}

func testQuotaOldEpochs(t *testing.T, s accounts.Store) {
	r := register(t, s)
	for e := uint32(10); e <= 12; e++ {
		if err := s.ConsumeQuota(bg, r.a.Ref, e, 2, 10); err != nil {
			t.Fatal(err)
		}
	}
	// Taking at 12 keeps 11 (requests straddling the rollover) and drops 10.
	for e, want := range map[uint32]int{10: 0, 11: 2, 12: 2} {
		if n, err := s.QuotaUsed(bg, r.a.Ref, e); err != nil || n != want {
			t.Fatalf("QuotaUsed(epoch %d) = %d, %v; want %d", e, n, err, want)
		}
	}
	// A dropped epoch's allowance is not given again by old counts: a
	// take at 11 still counts from 2.
	if err := s.ConsumeQuota(bg, r.a.Ref, 11, 8, 10); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "ConsumeQuota of epoch 11 over its limit", s.ConsumeQuota(bg, r.a.Ref, 11, 1, 10), accounts.ErrQuota)
}

func testQuotaConcurrent(t *testing.T, s accounts.Store) {
	r := register(t, s)
	const workers, limit = 16, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.ConsumeQuota(bg, r.a.Ref, 3, 1, limit)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, accounts.ErrQuota):
				t.Errorf("ConsumeQuota: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != limit {
		t.Fatalf("%d concurrent takes of 1 succeeded under a limit of %d", ok, limit)
	}
	if n, err := s.QuotaUsed(bg, r.a.Ref, 3); err != nil || n != limit {
		t.Fatalf("QuotaUsed = %d, %v", n, err)
	}
}

// ---- KeyPackages ----

func testKeyPackagesFIFO(t *testing.T, s accounts.Store) {
	r := register(t, s)
	other := register(t, s)
	big := make([]byte, 8<<10)
	rand.Read(big)
	first := [][]byte{[]byte("a"), big, []byte("c")}
	in := slices.Clone(first[0])
	first[0] = in
	if n, err := s.AddKeyPackages(bg, r.a.Ref, first, 100); err != nil || n != 3 {
		t.Fatalf("AddKeyPackages = %d, %v", n, err)
	}
	in[0] = 'X' // the store kept its own copy
	if n, err := s.AddKeyPackages(bg, other.a.Ref, [][]byte{[]byte("other")}, 100); err != nil || n != 1 {
		t.Fatalf("AddKeyPackages(other) = %d, %v", n, err)
	}
	if n, err := s.AddKeyPackages(bg, r.a.Ref, [][]byte{[]byte("d")}, 100); err != nil || n != 4 {
		t.Fatalf("second AddKeyPackages = %d, %v", n, err)
	}
	if n, err := s.AddKeyPackages(bg, r.a.Ref, nil, 100); err != nil || n != 4 {
		t.Fatalf("count = %d, %v", n, err)
	}
	for _, want := range [][]byte{[]byte("a"), big, []byte("c"), []byte("d"), nil, nil} {
		got, err := s.TakeKeyPackage(bg, r.cred)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("TakeKeyPackage = %.16q (%d bytes), %v; want %.16q (%d bytes)", got, len(got), err, want, len(want))
		}
	}
	// Popping all and adding again keeps the order.
	if _, err := s.AddKeyPackages(bg, r.a.Ref, [][]byte{[]byte("e"), []byte("f")}, 100); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.TakeKeyPackage(bg, r.cred); string(got) != "e" {
		t.Fatalf("after refill took %q, want e", got)
	}
	if got, err := s.TakeKeyPackage(bg, random[accounts.CredID]()); err != nil || got != nil {
		t.Fatalf("TakeKeyPackage(unknown) = %q, %v", got, err)
	}
	if got, _ := s.TakeKeyPackage(bg, other.cred); string(got) != "other" {
		t.Fatalf("other account's KeyPackage = %q", got)
	}
	_, err := s.AddKeyPackages(bg, random[accounts.AccountRef](), [][]byte{[]byte("x")}, 100)
	wantErr(t, "AddKeyPackages unknown account", err, accounts.ErrNotFound)
}

func testKeyPackagesPoolFull(t *testing.T, s accounts.Store) {
	r := register(t, s)
	if _, err := s.AddKeyPackages(bg, r.a.Ref, [][]byte{[]byte("1"), []byte("2"), []byte("3")}, 4); err != nil {
		t.Fatal(err)
	}
	n, err := s.AddKeyPackages(bg, r.a.Ref, [][]byte{[]byte("4"), []byte("5")}, 4)
	wantErr(t, "AddKeyPackages past the limit", err, accounts.ErrPoolFull)
	if n != 3 {
		t.Fatalf("AddKeyPackages refused reports %d, want the 3 held", n)
	}
	if n, err := s.AddKeyPackages(bg, r.a.Ref, [][]byte{[]byte("4")}, 4); err != nil || n != 4 {
		t.Fatalf("AddKeyPackages up to the limit = %d, %v", n, err)
	}
	for _, want := range []string{"1", "2", "3", "4", ""} {
		if got, err := s.TakeKeyPackage(bg, r.cred); err != nil || string(got) != want {
			t.Fatalf("TakeKeyPackage = %q, %v; want %q (nothing of the refused upload)", got, err, want)
		}
	}
}

func testKeyPackagesConcurrentTakes(t *testing.T, s accounts.Store) {
	r := register(t, s)
	const n = 20
	var kps [][]byte
	for i := range n {
		kps = append(kps, []byte(fmt.Sprintf("kp-%02d", i)))
	}
	if _, err := s.AddKeyPackages(bg, r.a.Ref, kps, n); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	empty := 0
	for range n + 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kp, err := s.TakeKeyPackage(bg, r.cred)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("TakeKeyPackage: %v", err)
			}
			if kp == nil {
				empty++
			} else {
				seen[string(kp)]++
			}
		}()
	}
	wg.Wait()
	if len(seen) != n || empty != 5 {
		t.Fatalf("%d distinct KeyPackages and %d empty answers from %d takes, want %d and 5", len(seen), empty, n+5, n)
	}
	for kp, c := range seen {
		if c != 1 {
			t.Fatalf("KeyPackage %s taken %d times", kp, c)
		}
	}
}

// ---- failures ----

func testCancelledContext(t *testing.T, s accounts.Store) {
	r := register(t, s)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	cred := random[accounts.CredID]()
	a := accounts.StoredAccount{Ref: random[accounts.AccountRef](), Created: t0, Record: random[[account.RegistrationRecordSize]byte]()}
	if err := s.Register(ctx, cred, a, newSession(random[account.DeviceID](), "x", t0)); err == nil {
		t.Fatal("Register with a cancelled context succeeded")
	}
	if err := s.ConsumeQuota(ctx, r.a.Ref, 1, 1, 10); err == nil {
		t.Fatal("ConsumeQuota with a cancelled context succeeded")
	}
	if _, err := s.Account(bg, cred); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("a registration with a cancelled context was stored: %v", err)
	}
	if n, _ := s.QuotaUsed(bg, r.a.Ref, 1); n != 0 {
		t.Fatalf("a take with a cancelled context counted %d", n)
	}
}

func testClosed(t *testing.T, s accounts.Store) {
	r := register(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Account(bg, r.cred)
	wantErr(t, "Account after Close", err, accounts.ErrClosed)
	_, err = s.Session(bg, r.s.Hash, t0)
	wantErr(t, "Session after Close", err, accounts.ErrClosed)
	wantErr(t, "ConsumeQuota after Close", s.ConsumeQuota(bg, r.a.Ref, 1, 1, 10), accounts.ErrClosed)
	_, err = s.TakeKeyPackage(bg, r.cred)
	wantErr(t, "TakeKeyPackage after Close", err, accounts.ErrClosed)
	wantErr(t, "Register after Close", s.Register(bg, random[accounts.CredID](), r.a, r.s), accounts.ErrClosed)
}
