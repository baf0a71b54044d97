package server

import (
	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/wire"
)

// negotiate picks the protocol version of a connection
// (docs/compatibility.md): the highest version both the server and the
// ClientHello list. TLS already chose an ALPN identifier the same way;
// when the two disagree, one side is broken or something stripped
// versions from one of the lists, and the connection is refused rather
// than run at the lower version.
func (s *Server) negotiate(conn *quic.Conn, offered []uint16) (uint16, error) {
	v, ok := wire.Negotiate(s.opts.Versions, offered)
	if !ok {
		return 0, wire.Errorf(wire.CodeVersion, "server speaks versions %v", s.opts.Versions)
	}
	alpn := conn.ConnectionState().TLS.NegotiatedProtocol
	if av, ok := wire.ParseALPN(alpn); !ok || av != v {
		return 0, wire.Errorf(wire.CodeVersion, "hello chose version %d but TLS negotiated %q", v, alpn)
	}
	return v, nil
}
