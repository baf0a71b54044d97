package tunnel

import (
	"net"
	"syscall"
)

// quickAck asks the kernel to acknowledge what it has received at once
// instead of delaying the ACK (TCP_QUICKACK, tcp(7)). Linux clears the
// flag by itself, so it is set again after every read.
func quickAck(rc syscall.RawConn) {
	rc.Control(func(fd uintptr) {
		// An error only means the ACK is delayed as before.
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

// quickAckConn returns the raw connection of c if c is a TCP connection
// that exposes it (syscall.Conn), else nil.
func quickAckConn(c net.Conn) syscall.RawConn {
	if _, ok := c.LocalAddr().(*net.TCPAddr); !ok {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
