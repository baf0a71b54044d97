// Package hostile is the test harness of a lying server: the real qpc
// server (server.Server over a bbolt store, accounts, delivery tokens and a
// key-transparency directory, as qpc-server assembles them) run by an
// operator who deviates from the protocol when a test says so.
//
// Start it first; every attack test then plays the party the threat model
// defends against (docs/threat-model.md lists each beside its promise):
//
//	h := hostile.Start(t, hostile.Options{})
//	alice := h.NewUser(t, "alice", "alice") // its connections are tagged "alice"
//	h.Rewrite(func(x *hostile.Exchange) {   // lie to one client
//		if x.Tag == "bob" && x.Request.Kind() == wire.KindKTLookup { ... }
//	})
//
// What it can do, all from outside the server's code:
//   - tell clients apart: each tag has a listener of its own (Addr), so the
//     server knows which user a connection belongs to, the worst case;
//   - rewrite, drop, add or replay any record it sends (Rewrite), per
//     client, per request, including the version handshake;
//   - answer from another key-transparency history (ForkKT);
//   - keep, drop or reorder what the store holds (Options.WrapStore);
//   - record everything the server sees (Events).
//
// The seam it uses is server.Options.Tap, a stream wrapper the binaries
// never set (docs/adr/0001-hostile-server-harness.md). Production code
// has no switch that makes it lie.
package hostile
