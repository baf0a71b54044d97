// Package tui is the terminal chat screen of `qpc chat`: a bubbletea
// model with the conversation list (unread counts) on the left, the
// selected conversation's messages (sender, and for our own messages
// whether they are still queued in the outbox, were acknowledged by the
// server, or, in direct chats, were delivered to or read by the contact
// as its receipts say) on the right, an input line at the bottom, and
// alarms (key transparency, split view, missing messages) as a red
// banner at the top.
//
// The conversation on screen counts as read: when a text arrives in it,
// when the user switches to a conversation with unread texts, and at
// start for the one selected first, the screen calls MarkRead, which
// moves the conversation's read mark in the local state (so the unread
// counts survive a restart: Load reads them with Unread) and schedules
// read receipts where the user turned them on.
//
// The model holds no terminal and no connection. It is driven by
// messages: Opened when the local state is open (Load builds it), Status
// lines while connecting, EventMsg for each client.Event that Sync or
// Follow brought, and the keys. Sends and delivery checks run as
// commands against a Messenger (a *client.Client). The caller runs
// client.Follow in a goroutine and hands its events to the program with
// Program.Send, so the screen shows what the CLI would print. Tests feed
// messages into Update and read View.
package tui
