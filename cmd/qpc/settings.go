package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/quicprochat/qpc/client"
)

// contactReceipts is `qpc contact receipts <handle> on|off [--read]`:
// delivery receipts to a contact on or off; --read also (or, with off,
// only) read receipts. Both are off until turned on.
func (c *cli) contactReceipts(ctx context.Context, args []string) error {
	const use = "contact receipts <handle> [on|off] [--read]"
	fs := flag.NewFlagSet("qpc contact receipts", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	read := fs.Bool("read", false, "read receipts too")
	// Flags may follow the arguments.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return usagef("%s: %v", use, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
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

// coverCmd is `qpc cover <rate>|off [--fetch-every D]`: the stored cover
// setting that `qpc recv --follow` uses.
func (c *cli) coverCmd(ctx context.Context, args []string) error {
	const use = "cover <envelopes per second>|off [--fetch-every 30s]"
	fs := flag.NewFlagSet("qpc cover", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	every := fs.Duration("fetch-every", 30*time.Second, "fetch period in cover mode")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return usagef(use)
	}
	var o *client.CoverOptions
	if fs.Arg(0) != "off" {
		rate, err := parseRate(fs.Arg(0))
		if err != nil {
			return usagef("%s: %v", use, err)
		}
		o = &client.CoverOptions{Rate: rate, FetchEvery: *every}
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		if _, err := cl.SetCover(ctx, o); err != nil {
			return err
		}
		if o == nil {
			return c.say("cover traffic off")
		}
		return c.say("cover traffic on: %g envelopes/s (%.0f tokens a day) while `qpc recv --follow` runs", o.Rate, o.Rate*86400)
	})
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
}

// followCover is `qpc recv --follow --cover <rate>`: Follow in cover
// mode for this run, whatever the stored setting.
func (c *cli) followCover(ctx context.Context, cl *client.Client, rate string, print func(client.Event)) error {
	r, err := parseRate(rate)
	if err != nil {
		return usagef("recv --cover: %v", err)
	}
	return cl.FollowCover(ctx, client.CoverOptions{Rate: r}, print)
}
