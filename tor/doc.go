// Package tor carries quicprochat over Tor: a server reachable as an onion
// service, and clients that reach it, or any server, through Tor circuits,
// so that neither the server nor the network learns a client's address.
//
// QUIC runs unchanged: its datagrams are tunneled over the onion
// service's TCP stream, each prefixed with a 2-byte length, by a
// net.PacketConn over byte streams in tor/tunnel. The server
// serves that PacketConn like a UDP socket; the client passes it to
// client.Options.PacketConn. Addresses keep their pinned form,
// qpc://<pin>@<56 characters>.onion, port 4433 unless another is given
// (docs/protocol.md §1.1).
//
// Entry points: Start runs a tor process of our own and Attach uses an
// existing control port; Tor.Publish puts up a v3 onion service with a
// stable key (LoadOrCreateOnionKey), with client authorization when asked
// (AddClient, NewClientCredential); Tor.Dialer dials through SOCKS with
// stream isolation. tor/tunnel turns the resulting byte streams into the
// PacketConn QUIC runs on.
//
// What is already known, from quic-go v0.65 and bine v0.2.0 on this
// project's machines: SetReadDeadline must unblock a pending read, or
// closing the quic.Transport hangs; any non-temporary read error closes the
// whole Transport, so one peer's disconnect must never surface as one; the
// tunnel needs no-op SetReadBuffer and SetWriteBuffer, path MTU discovery
// disabled, an explicit initial packet size, and a longer handshake timeout
// for Tor. The context given to bine's tor.Start owns the tor process;
// Listen without NoWait and Dialer without SkipEnableNetwork wait forever
// without a deadline; bine's ClientAuths is v2-only, so v3 client
// authorization goes through raw ADD_ONION and ONION_CLIENT_AUTH_ADD
// control commands. Tests run a private Tor network on 127.0.0.1 (see
// shared/tornet beside the checkout).
//
// Imports: github.com/cretz/bine, quic-go and the standard library; never
// server, client or mls.
package tor
