// Package tor carries quicprochat over Tor: a server reachable as an onion
// service, and clients that reach it, or any server, through Tor circuits,
// so that neither the server nor the network learns a client's address
// (docs/tor.md).
//
// QUIC runs unchanged: its datagrams are tunneled over TCP streams through
// Tor, each behind a 2-byte length, by tor/tunnel. Addresses keep their
// pinned form, qpc://<pin>@<56 characters>.onion[:port] (docs/protocol.md
// §1.1, §1.5).
//
// Entry points:
//
//   - Start runs a tor process of our own (tor from PATH, its data
//     directory where the caller says) and waits for the bootstrap,
//     reporting Progress; Attach uses a running tor's control port
//     (cookie or password authentication). Close stops our own tor.
//   - Tor.Publish adds a v3 onion service for an Ed25519 key
//     (LoadOrCreateOnionKey keeps it in a file, so the address is stable
//     across restarts), forwarding to a loopback address or a unix socket,
//     optionally with v3 client authorization, and waits until the
//     descriptor is on the HSDirs. ClientKey, ClientCredential, AddClient,
//     RemoveClient and Clients manage authorized clients in tor's own file
//     formats; Tor.AuthorizeClient gives a client's tor its key.
//   - SOCKSDialer dials through tor's SOCKS port with stream isolation: a
//     SOCKS username per isolation key, so streams with different keys
//     never share a circuit. Dialer is the interface the client uses.
//
// Learned with bine v0.2.0: the context given to its Start owns the tor
// process (Start gives it one of its own, ended by Close); its Listen and
// Dialer wait forever without a deadline and its event wait keeps a reader
// on the control connection afterwards, so this package polls GETINFO for
// the bootstrap and reads HS_DESC events on a second control connection;
// its ClientAuths is v2-only, so v3 client authorization is raw ADD_ONION
// ... Flags=V3Auth ClientAuthV3= and ONION_CLIENT_AUTH_ADD. A client that
// asks an HSDir before the descriptor reached it gets a 404 and tor leaves
// that HSDir alone for 15 minutes, so Publish waits for every upload tor
// began, not the first. internal/tornet runs a private Tor network on
// 127.0.0.1 for the tests.
//
// Imports: github.com/cretz/bine, golang.org/x/net/proxy, quic-go (in
// tor/tunnel) and the standard library; never server, client or mls.
package tor
