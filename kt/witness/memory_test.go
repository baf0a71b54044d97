package witness_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt/witness"
)

// TestWitnessStrangerMemory plays a stranger against a witness: 48
// connections each POST an add-checkpoint body of MaxRequestBytes and
// hold back its last byte, so the witness can neither parse nor drop
// what it read. The witness's heap may grow by at most 32 MiB (twice
// MaxBufferedBytes: io.ReadAll's growth), and once the stranger goes an
// honest request is cosigned. Before: every such request held its MiB
// (about 48 MiB and up here; without bound for more connections).
func TestWitnessStrangerMemory(t *testing.T) {
	l := newKTLog(t, "kt.test/stranger-memory")
	w := newWitness(t, l)

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	const conns = 48
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'a'
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	addr := w.srv.Listener.Addr().String()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		go func() {
			fmt.Fprintf(c, "POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: %d\r\n\r\n", witness.MaxRequestBytes)
			for left := witness.MaxRequestBytes - 1; left > 0; {
				n := min(left, len(chunk))
				if _, err := c.Write(chunk[:n]); err != nil {
					return // refused: the witness closed it
				}
				left -= n
			}
		}()
	}
	var peak uint64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, heap())
	}
	grown := int64(peak) - int64(base)
	t.Logf("heap grew by %.1f MiB with %d connections holding %d MiB bodies", float64(grown)/(1<<20), conns, witness.MaxRequestBytes>>20)
	if grown > 2*witness.MaxBufferedBytes {
		t.Errorf("heap grew by %.1f MiB, want at most %d MiB", float64(grown)/(1<<20), 2*witness.MaxBufferedBytes>>20)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	// An honest request afterwards is served.
	l.tick(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ := w.post(t, l.request(t, 0))
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("honest add-checkpoint after the stranger left: %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
