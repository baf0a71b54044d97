package main

import (
	"context"
	"fmt"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/safetext"
	"github.com/quicprochat/qpc/internal/qrcode"
)

// qpc contact show-qr [<handle>] prints a contact string,
// qpc:contact:<handle>#<fingerprint>, then the same as a QR code. Whoever
// scans (or copies) it runs `qpc contact add <string>`, which refuses a
// key-transparency answer whose identity key has another fingerprint.

func (c *cli) contactShowQR(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return usagef("contact show-qr [<handle>]")
	}
	handle := ""
	if len(args) == 1 {
		handle = args[0]
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		s, err := cl.ContactString(handle)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(map[string]any{"contact": s})
		}
		fmt.Fprintln(c.stdout, safetext.Line(s))
		return qrcode.Render(c.stdout, s)
	})
}

// contactAdd adds a contact by handle, or by contact string (checking
// the fingerprint against key transparency).
func (c *cli) contactAdd(ctx context.Context, who string) error {
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		var ct *client.Contact
		var err error
		byString := client.IsContactString(who)
		if byString {
			ct, err = cl.AddContactString(ctx, who)
		} else {
			ct, err = cl.AddContact(ctx, who)
		}
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(contactJSON(ct))
		}
		fmt.Fprintf(c.stdout, "added %s (key transparency version %d, verified)\n", safetext.Line(ct.Handle), ct.Version)
		fmt.Fprintf(c.stdout, "safety number: %s\n", client.FormatSafetyNumber(ct.SafetyNumber))
		if byString {
			fmt.Fprintln(c.stdout, "the identity key matches the contact string's fingerprint")
		} else {
			fmt.Fprintln(c.stdout, "compare it with theirs in person or over another channel")
		}
		return nil
	})
}
