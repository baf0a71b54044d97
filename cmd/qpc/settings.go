package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/safetext"
)

// contactReceipts is `qpc contact receipts <handle> on|off [--read]`:
// delivery receipts to a contact on or off; --read also (or, with off,
// only) read receipts. Both are off until turned on.
func (c *cli) contactReceipts(ctx context.Context, args []string) error {
	const use = "contact receipts <handle> [on|off] [--read]"
	fs := flag.NewFlagSet("qpc contact receipts", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	read := fs.Bool("read", false, "read receipts too")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return usagef("%s: %v", use, err)
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef(use)
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		handle := pos[0]
		if len(pos) == 2 {
			var delivery, rd bool
			switch pos[1] {
			case "on":
				delivery, rd = true, *read
			case "off":
				delivery, rd = false, false
			default:
				return usagef(use)
			}
			if err := cl.SetReceipts(handle, delivery, rd); err != nil {
				return err
			}
		}
		delivery, rd, err := cl.Receipts(handle)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(map[string]any{"handle": handle, "delivery_receipts": delivery, "read_receipts": rd})
		}
		fmt.Fprintf(c.stdout, "receipts to %s: delivery %s, read %s\n", handle, onOff(delivery), onOff(rd))
		return nil
	})
}

// coverCmd is `qpc cover <rate>|off [--fetch-every D] [--force]`: the
// stored cover setting that `qpc recv --follow` uses. A rate is checked
// against the account's token quota on the server (client.SetCover);
// --force stores it unchecked, for cover that runs only part of the day.
func (c *cli) coverCmd(ctx context.Context, args []string) error {
	const use = "cover <envelopes per second>|off [--fetch-every 30s] [--force]"
	fs := flag.NewFlagSet("qpc cover", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	every := fs.Duration("fetch-every", 30*time.Second, "fetch period in cover mode")
	force := fs.Bool("force", false, "store the rate without checking it against the token quota")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return usagef("%s: %v", use, err)
	}
	if len(pos) != 1 {
		return usagef(use)
	}
	var o *client.CoverOptions
	if pos[0] != "off" {
		rate, err := parseRate(pos[0])
		if err != nil {
			return usagef("%s: %v", use, err)
		}
		o = &client.CoverOptions{Rate: rate, FetchEvery: *every}
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		var check client.CoverCheck
		if *force {
			if err := cl.SetCoverUnchecked(o); err != nil {
				return err
			}
			if o != nil {
				check.Unchecked = "--force"
			}
		} else {
			var err error
			check, err = cl.SetCover(ctx, o)
			var qe *client.CoverQuotaError
			if errors.As(err, &qe) {
				return fmt.Errorf("%w (--force sets it anyway, for cover that runs only part of the day)", err)
			}
			if err != nil {
				return err
			}
		}
		if o == nil {
			return c.say("cover traffic off")
		}
		msg := fmt.Sprintf("cover traffic on: %g envelopes/s (%.0f tokens a day) while `qpc recv --follow` runs", o.Rate, o.Rate*86400)
		if q := check.Quota; q != nil {
			msg = fmt.Sprintf("cover traffic on: %g envelopes/s (%.0f tokens a day, %.0f %% of this server's token quota of %s) while `qpc recv --follow` runs",
				o.Rate, o.Rate*86400, coverShare(o.Rate, *q)*100, q)
		}
		if c.json {
			return c.printJSON(map[string]any{"ok": true, "message": msg, "token_quota": check.Quota, "quota_unchecked": check.Unchecked})
		}
		if check.Unchecked != "" && check.Unchecked != "--force" {
			fmt.Fprintf(c.stderr, "qpc: the rate was stored without checking it against this account's token quota (%s); "+
				"once logged in, `qpc cover %g` checks it\n", safetext.Line(check.Unchecked), o.Rate)
		}
		return c.say("%s", msg)
	})
}

// coverShare is the share of q's quota that cover at rate takes.
func coverShare(rate float64, q protocol.TokenQuotaStatus) float64 {
	if q.Quota <= 0 {
		return math.Inf(1)
	}
	return rate * q.EpochLength.Seconds() / float64(q.Quota)
}

func parseRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || r <= 0 || r > 100 {
		return 0, fmt.Errorf("rate: a number of envelopes per second, above 0 and at most 100")
	}
	return r, nil
}

// printCover adds the cover lines to `qpc status`.
func printCover(w io.Writer, st *client.Status) {
	if !st.Cover.On {
		fmt.Fprintln(w, "cover traffic: off")
		return
	}
	cv := st.Cover
	fmt.Fprintf(w, "cover traffic: on, %g envelopes/s, fetch every %v\n", cv.Rate, cv.FetchEvery)
	fmt.Fprintf(w, "  costs:       %.0f tokens/day, %.1f MB/day (%d-byte envelopes); %d tokens left\n",
		cv.TokensPerDay, cv.BytesPerDay/1e6, cv.Envelope, st.Tokens)
	if q := st.TokenQuota; q != nil && cv.QuotaShare > 0 {
		line := fmt.Sprintf("  quota share: %.0f %% of the token quota (cover may use at most %.0f %%)", cv.QuotaShare*100, client.CoverQuotaShare*100)
		if cv.QuotaShare > client.CoverQuotaShare {
			line += fmt.Sprintf("; too much for real messages: `qpc cover %g` or lower", client.MaxCoverRate(*q))
		}
		fmt.Fprintln(w, line)
	}
}

// followCover is `qpc recv --follow --cover <rate>`: Follow in cover
// mode for this run, whatever the stored setting.
// followCover runs `qpc recv --follow --cover <rate>`: checked against
// the token quota as `qpc cover` is, unless force.
func (c *cli) followCover(ctx context.Context, cl *client.Client, rate string, force bool, print func(client.Event)) error {
	r, err := parseRate(rate)
	if err != nil {
		return usagef("recv --cover: %v", err)
	}
	if !force {
		check, err := cl.CheckCover(ctx, r)
		var qe *client.CoverQuotaError
		if errors.As(err, &qe) {
			return fmt.Errorf("%w (--force runs it anyway, for cover that runs only part of the day)", err)
		}
		if err != nil {
			return err
		}
		if check.Unchecked != "" {
			fmt.Fprintf(c.stderr, "qpc: the cover rate was not checked against this account's token quota (%s)\n", safetext.Line(check.Unchecked))
		}
	}
	return cl.FollowCover(ctx, client.CoverOptions{Rate: r}, print)
}

// parseMixed parses args with fs, letting flags stand before, between or
// after the positional arguments, which it returns in order.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}
