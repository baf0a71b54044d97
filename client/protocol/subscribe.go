package protocol

import (
	"context"
	"fmt"
	"sync"

	"github.com/quicprochat/qpc/wire"
)

// Subscription is a push delivery stream for one mailbox. Messages arrive
// on C in order, each once (by sequence number), until the subscription
// ends; then C is closed and Err says why. After a transport failure it
// resubscribes from the last message it delivered.
type Subscription struct {
	// C carries delivered messages. Read it promptly: the server's flow
	// control holds further deliveries while it is full.
	C <-chan Message

	ch       chan Message
	caughtUp chan struct{}
	once     sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
}

// CaughtUp is closed once the backlog present at subscription time has
// been delivered on C.
func (s *Subscription) CaughtUp() <-chan struct{} { return s.caughtUp }

// Close ends the subscription and waits for its goroutine.
func (s *Subscription) Close() {
	s.cancel()
	<-s.done
}

// Err is why the subscription ended: nil while it runs or after Close.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Subscribe starts push delivery of messages after the cursor. It returns
// once the server accepted the subscription, or with the server's refusal.
func (c *Conn) Subscribe(ctx context.Context, mb *Mailbox, after uint64) (*Subscription, error) {
	sctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Message, 64)
	sub := &Subscription{C: ch, ch: ch, caughtUp: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	started := make(chan error, 1)
	go sub.run(sctx, c, mb, after, started)
	select {
	case err := <-started:
		if err != nil {
			sub.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		return sub, nil
	case <-ctx.Done():
		sub.Close()
		return nil, fmt.Errorf("subscribe: %w", ctx.Err())
	}
}

func (s *Subscription) run(ctx context.Context, c *Conn, mb *Mailbox, cursor uint64, started chan<- error) {
	defer close(s.done)
	defer close(s.ch)
	first := true
	report := func(err error) {
		if first {
			started <- err
			first = false
		}
	}
	failures := 0
	for {
		progressed, err := s.once1(ctx, c, mb, &cursor, report)
		if ctx.Err() != nil {
			report(ctx.Err())
			return
		}
		if progressed {
			failures = 0
		}
		if !retryable(err) || (first && failures+1 >= c.opts.MaxAttempts) {
			s.err = err
			report(err)
			return
		}
		failures++
		c.opts.Logger.Debug("resubscribing", "failures", failures, "err", err)
		if failures >= c.opts.MaxAttempts*4 {
			s.err = err
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-timerC(c.backoff(failures)):
		}
	}
}

// once1 runs one subscription attempt until it fails. progressed reports
// whether anything was received, which resets the failure count.
func (s *Subscription) once1(ctx context.Context, c *Conn, mb *Mailbox, cursor *uint64, report func(error)) (progressed bool, err error) {
	sess, err := c.session(ctx)
	if err != nil {
		return false, err
	}
	req := &wire.Subscribe{ReceiveID: mb.ReceiveID, After: *cursor}
	if err := wire.Sign(req, mb.Key, sess.binding); err != nil {
		return false, err
	}
	st, r, err := c.roundTrip(ctx, sess, req)
	if err != nil {
		c.dropSession(sess)
		return false, err
	}
	st.SetDeadline(timeZero)
	// Closing the stream from our side tells the server we are gone.
	stop := context.AfterFunc(ctx, func() {
		st.CancelRead(0)
		st.Close()
	})
	defer stop()
	defer st.CancelRead(0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			if _, coded := wire.CodeOf(err); !coded && ctx.Err() == nil {
				// The stream broke, not the server's answer: if the
				// connection is gone too, redial next time.
				if sess.qc.Context().Err() != nil {
					c.dropSession(sess)
				}
			}
			return progressed, err
		}
		switch m := m.(type) {
		case *wire.Delivery:
			report(nil)
			progressed = true
			if m.Seq <= *cursor {
				continue // already delivered before a resubscribe
			}
			select {
			case s.ch <- fromDelivery(m):
				*cursor = m.Seq
			case <-ctx.Done():
				return progressed, ctx.Err()
			}
		case *wire.FetchEnd:
			report(nil)
			progressed = true
			s.once.Do(func() { close(s.caughtUp) })
		case *wire.ErrorMessage:
			return progressed, m.Err()
		default:
			return progressed, unexpected(m)
		}
	}
}
