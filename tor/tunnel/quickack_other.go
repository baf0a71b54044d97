//go:build !linux

package tunnel

import (
	"net"
	"syscall"
)

// quickAck is Linux's TCP_QUICKACK; elsewhere the kernel's delayed ACKs
// stay as they are.
func quickAck(syscall.RawConn) {}

func quickAckConn(net.Conn) syscall.RawConn { return nil }
