package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/mls"
)

// DefaultKTLookupParallel is how many lookup connections a join has open
// at once (Options.KTLookupParallel).
const DefaultKTLookupParallel = 8

// planLookups puts the labels of sets into batches of at most max labels
// such that no batch holds two labels of one set: each set's labels are
// ones the server must not see asked for together (one group's members),
// while labels of different sets may share a batch (docs/adr/0019). Every
// label appears once; the batches of the longest set's labels come first.
func planLookups(sets [][]string, max int) [][]string {
	var batches [][]string
	seen := map[string]bool{}
	for _, set := range sets {
		// Batch j takes this set's j-th label if it has room; otherwise
		// the label goes to a later batch holding none of the set.
		used := map[int]bool{}
		next := 0
		for _, l := range set {
			if seen[l] {
				continue
			}
			seen[l] = true
			for next < len(batches) && (used[next] || len(batches[next]) >= max) {
				next++
			}
			if next == len(batches) {
				batches = append(batches, nil)
			}
			batches[next] = append(batches[next], l)
			used[next] = true
			next++
		}
	}
	return batches
}

// memberLookup is one label's outcome in lookupMembers.
type memberLookup struct {
	label string
	res   *kt.LookupResult
	b     *kt.Binding
	err   error
}

// lookupMembers looks up the members of one group that were not checked
// within the hour (verifyMember's horizon) and stores them as lookup
// does, so that the per-member checks that follow find them fresh.
// No connection, and so no request, names two of them (planLookups with
// the group as one set; over Tor each connection has a circuit of its
// own), but up to KTLookupParallel connections run at once: the join
// waits for about one lookup per KTLookupParallel members instead of one
// per member. A lookup that fails is left to the per-member check, which
// looks that member up again and fails the join if it must.
func (c *Client) lookupMembers(ctx context.Context, handles []string) {
	var due []string
	for _, h := range handles {
		if h == c.prof.Handle || slices.Contains(due, h) {
			continue
		}
		if ct, err := c.contact(h); err == nil && ct != nil && c.opts.Now().Sub(ct.Checked) < time.Hour {
			continue
		}
		due = append(due, h)
	}
	if len(due) == 0 {
		return
	}
	par := c.opts.KTLookupParallel
	if par <= 0 {
		par = DefaultKTLookupParallel
	}
	batches := planLookups([][]string{due}, kt.MaxBatchLabels)
	start := time.Now()
	defer c.timed(TimeKTMembers, start)
	defer func() {
		c.log.Debug("kt: looked up a group's members", "members", len(due), "connections", len(batches), "parallel", par, "took", time.Since(start))
	}()
	out := make([][]memberLookup, len(batches))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, labels := range batches {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = c.fetchLookups(ctx, labels)
		}()
	}
	wg.Wait()
	// Stored one at a time, here: storing touches the profile and the
	// alarms.
	for _, ls := range out {
		for _, l := range ls {
			if l.err != nil {
				c.raiseLookupError(l.err)
				c.log.Debug("kt: a member's lookup failed; it is looked up again", "err", l.err)
				continue
			}
			if l.res.Version == 0 {
				continue // the per-member check reports it
			}
			if _, err := c.acceptLookup(ctx, l.label, l.res, l.b, false); err != nil {
				c.log.Debug("kt: a member's lookup not stored", "err", err)
			}
		}
	}
}

// fetchLookups looks labels up on a connection of their own (one request)
// and verifies them.
func (c *Client) fetchLookups(ctx context.Context, labels []string) []memberLookup {
	out := make([]memberLookup, len(labels))
	fail := func(err error) []memberLookup {
		for i := range out {
			out[i] = memberLookup{label: labels[i], err: err}
		}
		return out
	}
	conn, err := c.dial(ctx, fmt.Sprintf("%s:%d", connKTLookup, c.lookups.Add(1)))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	ask := func() ([]*kt.LookupResult, error) {
		if len(labels) == 1 {
			// A plain lookup: what servers without batches answer too.
			r, err := conn.KTLookupValue(ctx, c.v, labels[0])
			return []*kt.LookupResult{r}, err
		}
		return conn.KTLookupBatch(ctx, c.v, labels)
	}
	res, err := ask()
	if errors.Is(err, kt.ErrAdvanced) {
		res, err = ask() // as lookupLabel: prove consistency from the new checkpoint
	}
	if err != nil {
		return fail(err)
	}
	for i, r := range res {
		out[i] = memberLookup{label: labels[i], res: r}
		if r.Version == 0 {
			continue
		}
		b, err := kt.ParseBinding(r.Value)
		if err == nil {
			err = b.Verify(labels[i])
		}
		if err != nil {
			out[i].err = fmt.Errorf("kt lookup: %w", err)
			continue
		}
		out[i].b = b
	}
	return out
}

// knownMember reports whether a member's key is already checked without
// asking the server: its handle is a contact looked up within the hour
// (verifyMember's horizon) whose binding lists the key.
func (c *Client) knownMember(cred mls.Credential, key []byte) bool {
	if cred.Type != mls.CredentialTypeBasic {
		return false
	}
	ct, err := c.contact(string(cred.Identity))
	if err != nil || ct == nil || c.opts.Now().Sub(ct.Checked) >= time.Hour {
		return false
	}
	return slices.ContainsFunc(ct.DeviceKeys, func(k []byte) bool { return bytes.Equal(k, key) })
}

// checkSender checks a member marked Unverified at our join before one of
// its messages is read: every leaf of its handle in g must hold a key its
// key-transparency binding lists (verifyMember: the contact if checked
// within the hour, which the sealed sender's check has just made sure
// of, else a lookup on a connection of its own). A member that fails is
// refused with mls.ErrMemberRejected and stays unverified: none of its
// messages is shown as its own (docs/adr/0041-lazy-member-checks.md).
func (c *Client) checkSender(ctx context.Context, r *convRecord, g *mls.Group, handle string) error {
	mr := r.Members[handle]
	if mr == nil || !mr.Unverified {
		return nil
	}
	start := time.Now()
	verify := c.verifyMember(ctx)
	for _, m := range g.Members() {
		if string(m.Credential.Identity) != handle {
			continue
		}
		if err := verify(m.Credential, m.SignatureKey); err != nil {
			c.raiseLimited(Alarm{Kind: AlarmBadSender, Detail: fmt.Sprintf("in %s, %s's key is not the one key transparency shows (%v): its messages are not shown", r.display(), handle, err)})
			return fmt.Errorf("member %s: %w: %w", handle, mls.ErrMemberRejected, err)
		}
	}
	mr.Unverified = false
	c.log.Debug("kt: checked a member at its first message", "took", time.Since(start))
	return nil
}
