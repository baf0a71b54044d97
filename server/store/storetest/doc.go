// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's test calls Run with a function that opens a fresh, empty
// store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := store.Open(filepath.Join(t.TempDir(), "qpc.db"), store.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// open is called once per subtest; it should register the store's cleanup
// itself, because some subtests close the store early (Close must be
// idempotent). The suite exercises only the interface and its documented
// semantics: mailbox creation and lookup, ordering and paging of Fetch,
// idempotent Put (also after Ack), idempotent Ack, quotas, deletion, expiry
// with an injected clock, concurrent Puts, closed-store errors, and the
// spent set of one-time authorizations (spent by CreateMailbox, Put or
// Spend alone, once each, also under concurrency, by Spend and by Put; spent in the same
// transaction as the write it pays for, so a write refused for a spent
// token stores nothing and a refused write spends nothing).
//
// Assumptions about the backend: its time granularity divides one hour (the
// suite's timestamps are whole hours apart, so truncation never moves a
// message across a purge cutoff), and it accepts envelopes of at least
// 4 KiB.
package storetest
