package attack

// linker is connection linking: the mailboxes a connection reads (it
// subscribes to, fetches, acks or creates them, or the server delivers
// them to it) belong to one client; the mailboxes it writes to are that
// client's contacts' (or its own). Union-find over mailboxes, through
// each connection's first mailbox.
type linker struct {
	parent map[string]string
	owner  map[string]string          // conn -> a mailbox it reads
	writes map[string]map[string]int  // conn -> mailboxes it sends to
	reads  map[string]map[string]bool // mailbox -> conns that read it
}

func newLinker() *linker {
	return &linker{parent: map[string]string{}, owner: map[string]string{}, writes: map[string]map[string]int{}, reads: map[string]map[string]bool{}}
}

func (l *linker) find(m string) string {
	p, ok := l.parent[m]
	if !ok {
		l.parent[m] = m
		return m
	}
	if p == m {
		return m
	}
	root := l.find(p)
	l.parent[m] = root
	return root
}

func (l *linker) union(a, b string) {
	ra, rb := l.find(a), l.find(b)
	if ra != rb {
		if ra < rb {
			l.parent[rb] = ra
		} else {
			l.parent[ra] = rb
		}
	}
}

func (l *linker) observe(e *Event) {
	if e.Conn == "" || e.Mailbox == "" {
		return
	}
	reads := e.Ev == "subscribe" || e.Ev == "deliver" || e.Ev == "ack" ||
		(e.Ev == "request" && (e.Kind == "Fetch" || e.Kind == "Subscribe" || e.Kind == "Ack" || e.Kind == "CreateMailbox" || e.Kind == "DeleteMailbox"))
	switch {
	case reads:
		if o, ok := l.owner[e.Conn]; ok {
			l.union(o, e.Mailbox)
		} else {
			l.owner[e.Conn] = e.Mailbox
			l.find(e.Mailbox)
		}
		if l.reads[e.Mailbox] == nil {
			l.reads[e.Mailbox] = map[string]bool{}
		}
		l.reads[e.Mailbox][e.Conn] = true
	case e.Ev == "request" && e.Kind == "Send":
		w := l.writes[e.Conn]
		if w == nil {
			w = map[string]int{}
			l.writes[e.Conn] = w
		}
		w[e.Mailbox]++
	}
}

func (l *linker) result(r *Runner) Result {
	res := Result{Attack: "linking"}
	groups := map[string][]string{}
	for m := range l.parent {
		root := l.find(m)
		groups[root] = append(groups[root], m)
	}
	for _, g := range groups {
		if len(g) > 1 {
			sortStrings(g)
			res.Groups = append(res.Groups, g)
		}
	}
	sortGroups(res.Groups)
	for _, tm := range r.targets {
		// The target's group, and every mailbox a connection of that
		// group writes to (a contact's, or the other end of a
		// conversation).
		scores := map[string]float64{}
		root, known := l.find(tm.mailbox), true
		if _, ok := l.parent[tm.mailbox]; !ok {
			known = false
		}
		if known {
			for conn, m := range l.owner {
				if l.find(m) != root {
					continue
				}
				for d, n := range l.writes[conn] {
					if l.find(d) != root {
						scores[d] += float64(n)
					}
				}
			}
			// Connections writing to the target's group: their owners
			// write to the target.
			for conn, w := range l.writes {
				o, ok := l.owner[conn]
				if !ok || l.find(o) == root {
					continue
				}
				for d, n := range w {
					if l.find(d) == root {
						scores[o] += float64(n)
					}
				}
			}
		}
		var gs []Guess
		for m, s := range scores {
			gs = append(gs, r.guess(m, s))
		}
		t := finish(tm, 0, nil, gs, r.opt.Top)
		if len(t.Final) > 0 {
			t.Steps = []Step{{T: r.now, Top: t.Final[0], Unique: len(t.Final) == 1 || t.Final[0].Score > t.Final[1].Score}}
		}
		res.Targets = append(res.Targets, t)
	}
	return res
}
