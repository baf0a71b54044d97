// Package accountstest is the conformance suite every accounts.Store must
// pass. A backend's test calls Run with a function that opens a fresh,
// empty store and registers its cleanup:
//
//	func TestConformance(t *testing.T) {
//		accountstest.Run(t, func(t *testing.T) accounts.Store {
//			s, err := accounts.OpenBolt(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// open is called once per subtest; some subtests close the store early
// (Close must be idempotent). The suite exercises only the interface and
// what the account service relies on: a credential registered once (also
// under concurrent registrations), registration, login and password
// change each all or nothing, one session per device and the device
// limit, session expiry at the second promised and its purge, device
// listing order, revocation, deletion removing everything of an account
// (a new account under the same username inherits nothing), the quota per
// epoch (all or nothing, never over the limit under concurrency, old
// epochs dropped), the KeyPackage pool (first in first out, all-or-nothing
// uploads, concurrent takes never returning one KeyPackage twice), and
// closed-store and cancelled-context errors.
//
// Times given to the store are whole seconds (the service rounds them to
// the hour); a backend must keep them to the second.
package accountstest
