// Package tunnel carries datagrams over byte streams: a net.PacketConn
// whose packets travel, each behind a 2-byte big-endian length, over TCP
// connections, such as the streams of a Tor onion service. QUIC runs on it
// unchanged (docs/tor.md).
//
// On the server, Server(listener) accepts any number of streams and feeds
// them all to one quic.Transport; every stream gets its own synthetic
// Addr, so QUIC sees each as a peer of its own. On the client,
// Client(conn) gives one stream to one quic.Transport, which dials
// RemoteAddr. Use QUICConfig to fit a quic.Config to the tunnel.
//
// What quic-go needs from a PacketConn, learned the hard way: a read
// deadline must unblock a pending ReadFrom (Transport.Close sets one and
// waits); any non-temporary read error closes the whole Transport, so on a
// server one peer's disconnect is never reported by ReadFrom, only by
// failing writes to that peer; SetReadBuffer and SetWriteBuffer exist
// (as no-ops); and with no path MTU to discover, the packet size is fixed.
// Writes never block: each stream has a bounded queue, and a full queue
// drops the datagram as a full UDP buffer would, so one slow circuit
// cannot stall the others.
//
// Tor writes to its streams with Nagle's algorithm on, which costs a
// delayed-ACK timeout (40 ms) wherever a write follows an unacknowledged
// one. So the tunnel acknowledges every read at once (TCP_QUICKACK on
// Linux), and a write of only small datagrams (QUIC ACKs) after a quiet
// spell waits up to Options.SmallHold for the answer that usually follows,
// to cross Tor in the same write (docs/tor.md, "Performance"; ADR 0023).
//
// Imports: quic-go and the standard library.
package tunnel
