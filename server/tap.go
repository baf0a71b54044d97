package server

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream is one request stream as the server's handlers use it.
// *quic.Stream implements it; a StreamTap may return a wrapper.
type Stream interface {
	io.ReadWriteCloser
	Context() context.Context
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	CancelRead(quic.StreamErrorCode)
	CancelWrite(quic.StreamErrorCode)
}

var _ Stream = (*quic.Stream)(nil)

// ConnInfo names one connection for a StreamTap.
type ConnInfo struct {
	ID         uint64 // numbered from 1 in the order connections finish their handshake
	Transport  string // metrics.TransportUDP or metrics.TransportTor
	LocalAddr  net.Addr
	RemoteAddr net.Addr
}

// StreamTap sees each stream of a connection before the server reads it
// and returns the stream the server is to use: st itself, or a wrapper
// that observes or rewrites the records in either direction.
//
// The tap is the seam of internal/hostile, which plays a server operator
// who lies to its clients: everything a tap can do, an operator who
// changes the server's code can do too, so the seam weakens nothing the
// threat model relies on (docs/adr/0001-hostile-server-harness.md).
type StreamTap func(c ConnInfo, st Stream) Stream

func (s *Server) connInfo(conn *quic.Conn, transport string) ConnInfo {
	return ConnInfo{
		ID:         s.connIDs.Add(1),
		Transport:  transport,
		LocalAddr:  conn.LocalAddr(),
		RemoteAddr: conn.RemoteAddr(),
	}
}

func (s *Server) tapStream(c ConnInfo, st *quic.Stream) Stream {
	if s.opts.Tap == nil {
		return st
	}
	return s.opts.Tap(c, st)
}
