package loadkit

import (
	"encoding/binary"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/wire"
)

// Each envelope starts with a header; the rest is filler. The message ID
// is repeated inside so the receiver checks that what it got under an ID
// is what was sent under it.
const (
	HeaderSize   = 4 + 4 + 4 + 8 + wire.MessageIDSize // from, to, seq, sent (since the run's start), id
	EnvelopeSize = 1000                               // leaves a 2 KiB bucket with room for the token
)

// Envelope is what a load run's message says about itself.
type Envelope struct {
	From, To, Seq int
	Sent          time.Duration // since the run's start
}

// Encode returns the EnvelopeSize bytes of message seq from client from
// to client to, sent at sent and sent under id.
func Encode(from, to, seq int, sent time.Duration, id wire.MessageID) []byte {
	b := make([]byte, EnvelopeSize)
	binary.BigEndian.PutUint32(b[0:], uint32(from))
	binary.BigEndian.PutUint32(b[4:], uint32(to))
	binary.BigEndian.PutUint32(b[8:], uint32(seq))
	binary.BigEndian.PutUint64(b[12:], uint64(sent))
	copy(b[20:], id[:])
	for i := HeaderSize; i < len(b); i++ {
		b[i] = byte(from + seq + i)
	}
	return b
}

// Open reads an envelope that client at received under id. It reports
// false when the envelope is not one Encode wrote for at under id: the
// wrong size, addressed to another client, carrying another ID, or with a
// filler byte changed.
func Open(b []byte, at int, id wire.MessageID) (Envelope, bool) {
	if len(b) != EnvelopeSize {
		return Envelope{}, false
	}
	e := Envelope{
		From: int(binary.BigEndian.Uint32(b[0:])),
		To:   int(binary.BigEndian.Uint32(b[4:])),
		Seq:  int(binary.BigEndian.Uint32(b[8:])),
		Sent: time.Duration(binary.BigEndian.Uint64(b[12:])),
	}
	var inner wire.MessageID
	copy(inner[:], b[20:])
	ok := e.To == at && inner == id
	for i := HeaderSize; ok && i < len(b); i++ {
		ok = b[i] == byte(e.From+e.Seq+i)
	}
	return e, ok
}

// Key names message seq of client from in a run's ledger.
func Key(from, seq int) uint64 { return uint64(from)<<32 | uint64(seq) }

// Tally checks a run's ledger for the exactly-once promise: acked holds
// the keys the server acknowledged (with whatever a harness records of
// each), delivered how many times each key reached its receiver. lost
// counts acknowledged messages never delivered, duplicated the deliveries
// after a message's first, unacked the messages delivered but never
// acknowledged.
func Tally[V any](acked map[uint64]V, delivered map[uint64]int) (lost, duplicated, unacked int) {
	for k := range acked {
		if delivered[k] == 0 {
			lost++
		}
	}
	for k, n := range delivered {
		if n > 1 {
			duplicated += n - 1
		}
		if _, ok := acked[k]; !ok {
			unacked++
		}
	}
	return lost, duplicated, unacked
}

// Percentile is the q quantile (0..1) of sorted, in milliseconds; 0 when
// sorted is empty.
func Percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(q*float64(len(sorted)-1))].Microseconds()) / 1000
}

// LoadAvg is the 1-minute load average, "?" when it cannot be read: how
// busy the shared machine was.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// RaiseNoFile lifts the soft RLIMIT_NOFILE to at least n (a load run
// holds a UDP socket per client), raising the hard limit too where it is
// lower (root may), and fails t if it cannot.
func RaiseNoFile(t testing.TB, n uint64) {
	t.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
	if r.Cur >= n {
		return
	}
	if r.Max < n {
		r.Max = n
	}
	r.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatalf("RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// logLimit bounds a LockedBuffer: a chatty child cannot fill the test's
// memory.
const logLimit = 1 << 20

// LockedBuffer collects a child process's output from several writers
// (its stdout and stderr copiers) and keeps the first MiB; writes beyond
// it are dropped, reported as written.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < logLimit {
		l.b.Write(p)
	}
	return len(p), nil
}

// String is what was kept so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// ServerBinary compiles cmd/qpc-server once per test process and returns
// its path; it fails t if the build fails.
func ServerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qpc-load-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "qpc-server")
		cmd := exec.Command("go", "build", "-o", buildBin, "github.com/quicprochat/qpc/cmd/qpc-server")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("build qpc-server: %v", buildErr)
	}
	return buildBin
}

// Sends runs client i's part of a load run's send schedule: it waits a
// random phase within interval, then calls send once per interval, each
// time to a random other of the clients clients, until it has called it
// sends times, end has passed, or send returns false. The random choices
// are seeded by i, so a run's pattern is the same every time.
func Sends(i, clients, sends int, interval time.Duration, end time.Time, send func(seq, to int) bool) {
	rng := mrand.New(mrand.NewPCG(uint64(i), 7))
	time.Sleep(time.Duration(rng.Int64N(int64(interval))))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; seq < sends; seq++ {
		if seq > 0 {
			<-tick.C
		}
		if !time.Now().Before(end) {
			return
		}
		to := rng.IntN(clients - 1)
		if to >= i {
			to++
		}
		if !send(seq, to) {
			return
		}
	}
}
