package store

// The idempotency index: which message IDs each mailbox has accepted
// within the idempotency window, and the seq each was stored under.
//
// It lives in memory. On disk its source is the arrivals bucket (time |
// receiveID | seq -> messageID), which Put appends to in time order in the
// same transaction as the message; Open rebuilds the index from it. On
// disk, a B-tree keyed by the random message IDs costs each send a leaf
// page of its own (docs/storage.md), the largest single share of a
// commit's writes; the map costs memory instead (see idemEntryBytes).
//
// Only the writer goroutine touches the index once Open has returned, so
// it has no lock. Its changes follow the transaction they were made in:
// every change records how to undo it, the writer discards the record
// when the transaction commits and replays it backwards when it fails, so
// the index never holds a key whose message was rolled back, nor lacks
// one that was committed.

type idemEntry struct {
	seq      uint64
	received int64 // coarse Unix seconds, as in the arrival key
}

type idemBox = map[[MessageIDSize]byte]idemEntry

// idemUndo reverses one change: a whole mailbox dropped (box != nil), or
// one key set or deleted (prev/had is what was there before).
type idemUndo struct {
	rid  [MailboxIDSize]byte
	id   [MessageIDSize]byte
	prev idemEntry
	had  bool
	box  idemBox
}

type idemIndex struct {
	boxes map[[MailboxIDSize]byte]idemBox
	keys  int // entries in all boxes
	undo  []idemUndo
}

func newIdemIndex() *idemIndex {
	return &idemIndex{boxes: make(map[[MailboxIDSize]byte]idemBox)}
}

func (x *idemIndex) get(rid [MailboxIDSize]byte, id [MessageIDSize]byte) (idemEntry, bool) {
	e, ok := x.boxes[rid][id]
	return e, ok
}

// put records id as stored under e, undoably.
func (x *idemIndex) put(rid [MailboxIDSize]byte, id [MessageIDSize]byte, e idemEntry) {
	prev, had := x.get(rid, id)
	x.undo = append(x.undo, idemUndo{rid: rid, id: id, prev: prev, had: had})
	x.set(rid, id, e)
}

// del forgets id, undoably.
func (x *idemIndex) del(rid [MailboxIDSize]byte, id [MessageIDSize]byte) {
	prev, had := x.get(rid, id)
	if !had {
		return
	}
	x.undo = append(x.undo, idemUndo{rid: rid, id: id, prev: prev, had: true})
	x.unset(rid, id)
}

// drop forgets every key of a mailbox, undoably.
func (x *idemIndex) drop(rid [MailboxIDSize]byte) {
	box, ok := x.boxes[rid]
	if !ok {
		return
	}
	x.undo = append(x.undo, idemUndo{rid: rid, box: box})
	delete(x.boxes, rid)
	x.keys -= len(box)
}

func (x *idemIndex) set(rid [MailboxIDSize]byte, id [MessageIDSize]byte, e idemEntry) {
	box, ok := x.boxes[rid]
	if !ok {
		box = make(idemBox)
		x.boxes[rid] = box
	}
	if _, had := box[id]; !had {
		x.keys++
	}
	box[id] = e
}

func (x *idemIndex) unset(rid [MailboxIDSize]byte, id [MessageIDSize]byte) {
	box, ok := x.boxes[rid]
	if !ok {
		return
	}
	if _, had := box[id]; !had {
		return
	}
	delete(box, id)
	x.keys--
	if len(box) == 0 {
		delete(x.boxes, rid)
	}
}

// commit keeps the changes made since the last commit or rollback.
func (x *idemIndex) commit() {
	clear(x.undo)
	x.undo = x.undo[:0]
}

// rollback reverses the changes made since the last commit or rollback,
// newest first.
func (x *idemIndex) rollback() {
	for i := len(x.undo) - 1; i >= 0; i-- {
		u := x.undo[i]
		switch {
		case u.box != nil:
			x.boxes[u.rid] = u.box
			x.keys += len(u.box)
		case u.had:
			x.set(u.rid, u.id, u.prev)
		default:
			x.unset(u.rid, u.id)
		}
	}
	x.commit()
}
