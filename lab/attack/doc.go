// Package attack runs traffic-analysis attacks over what qpc's delivery
// server sees: the observer record (lab-common schema v1, docs/research.md)
// and nothing else. The ground truth is never read here; package
// lab/attack/score compares the guesses with it.
//
// Call New with Options (and the attacker's public knowledge, Identities:
// the handle -> intro mailbox map that key transparency gives any server),
// feed it every observer event in time order with Observe (or use
// ReadObserver on a JSONL record), then call Results. Each attack reports,
// per target mailbox, the steps at which its top guess changed and a final
// ranking of candidate mailboxes, resolved to handles where the attacker
// can.
//
// The attacks (docs/research.md "## Attacks"):
//
//   - sda: the statistical disclosure attack of Martiny et al. (NDSS 2021)
//     with delivery receipts: for every message a target mailbox receives,
//     the mailboxes that receive within the receipt window after it are
//     counted, and the count expected from each mailbox's background rate
//     is subtracted.
//   - sda-epoch: the same attack counted as the paper counts it, in fixed
//     epochs (Options.Epoch, default 1 s): for each epoch in which the
//     target receives, the distinct mailboxes receiving in it and the next
//     (Options.EpochSpan) score 1; one random earlier non-target range of
//     epochs per target epoch scores -1 (seeded by Options.Seed). sda,
//     which opens its window at the delivery's exact time and subtracts
//     the expected background, is the stronger attacker.
//   - intersection: the same windows, kept as sets; the candidates are the
//     mailboxes present in (almost) every window.
//   - timing: a kernel-weighted correlation of a target's receive times
//     with every mailbox's receive times over minutes (jittered receipts,
//     human replies), background-corrected.
//   - activity: what cover traffic defeats (threat model, "Cover traffic":
//     when you talk): mailboxes active in the same minutes as the target,
//     in either order.
//   - linking: mailboxes seen on one connection (subscribed, fetched,
//     acked, or written to by it) belong to one client.
//   - size: the bucket histogram of what a mailbox receives, compared by
//     cosine similarity.
package attack
