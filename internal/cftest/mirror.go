package cftest

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/daneroll/daneroll/internal/dnstest"
)

// Change operations.
const (
	OpCreate = "create"
	OpDelete = "delete"
)

// Change is one record the API created or deleted.
type Change struct {
	// Zone is the zone's name as Cloudflare shows it: "example.org".
	Zone string
	// Op is OpCreate or OpDelete.
	Op     string
	Record Record
}

// OnChange makes f see every record created or deleted from now on,
// through the API or AddRecord, in the order the changes were applied. f
// runs before the API answers the request that made the change, also when
// a fault drops or replaces that answer after the change was applied. f may
// read the API (Records, Requests) but must not change its records: the
// change would wait for f to return, which waits for the change.
func (a *API) OnChange(f func(Change)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hooks = append(a.hooks, f)
}

// changed queues a change for the hooks; a.mu is held.
func (a *API) changed(op string, z *zone, rec *Record) {
	if len(a.hooks) > 0 {
		a.pending = append(a.pending, Change{Zone: z.Name, Op: op, Record: *rec})
	}
}

// unlockAndNotify releases a.mu and hands the changes made under it to the
// hooks, after the hooks have seen every earlier change.
func (a *API) unlockAndNotify() {
	changes, hooks := a.pending, a.hooks
	a.pending = nil
	if len(changes) == 0 {
		a.mu.Unlock()
		return
	}
	prev, done := a.takeTurn()
	a.mu.Unlock()
	defer close(done)
	if prev != nil {
		<-prev
	}
	for _, c := range changes {
		for _, f := range hooks {
			f(c)
		}
	}
}

// takeTurn queues the caller behind the hook calls already queued: it
// returns the channel to wait on (nil when there is nothing to wait for) and
// the one to close when done. a.mu is held.
func (a *API) takeTurn() (prev <-chan struct{}, done chan struct{}) {
	prev = a.lastTurn
	done = make(chan struct{})
	a.lastTurn = done
	return prev, done
}

// automaticTTLSeconds is what Cloudflare's name servers serve for a record
// whose TTL is automatic (1).
const automaticTTLSeconds = 300

// RR returns the record as Cloudflare's name servers serve it. An
// automatic TTL is served as 300 seconds.
func (r Record) RR() (dns.RR, error) {
	ttl := r.TTL
	if ttl == automaticTTL || ttl == 0 {
		ttl = automaticTTLSeconds
	}
	var rdata string
	switch r.Type {
	case "A", "AAAA":
		rdata = r.Content
	case "CNAME", "NS", "PTR":
		rdata = dns.Fqdn(r.Content)
	case "MX":
		if r.Priority == nil {
			return nil, fmt.Errorf("cftest: MX record %s has no priority", r.Name)
		}
		rdata = fmt.Sprintf("%d %s", *r.Priority, dns.Fqdn(r.Content))
	case "TXT":
		rdata = r.Content
		if !strings.HasPrefix(strings.TrimSpace(rdata), `"`) {
			// Unquoted content is one string (see parseTXT).
			rdata = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(rdata) + `"`
		}
	case "TLSA":
		if r.Data == nil {
			return nil, fmt.Errorf("cftest: TLSA record %s has no data", r.Name)
		}
		d := r.Data
		// Lower case, as the data comes off the wire: dns.IsDuplicate
		// compares the hex as text.
		rdata = fmt.Sprintf("%d %d %d %s", d.Usage, d.Selector, d.MatchingType, strings.ToLower(d.Certificate))
	default:
		return nil, fmt.Errorf("cftest: %s records cannot be served", r.Type)
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", dns.Fqdn(r.Name), ttl, r.Type, rdata))
	if err != nil {
		return nil, fmt.Errorf("cftest: record %s %s: %w", r.Name, r.Type, err)
	}
	return rr, nil
}

// Mirror is a dnstest cluster serving a zone of the fake as Cloudflare's
// name servers would; see [API.MirrorTo].
type Mirror struct {
	cluster *dnstest.Cluster
	zone    string

	mu   sync.Mutex // guards errs and held
	errs []error
	// held counts the API's records behind each record served, by its
	// data (TTL aside): more than one only after AddIdenticalRecord.
	held map[string]int
}

// MirrorTo makes c serve the fake's zone of the same name (c.Origin()) the
// way Cloudflare's name servers serve it: the zone's records now, and every
// later create and delete, applied to c's primary before the API answers
// the request that made the change. The secondaries copy the primary as
// c's Freeze, Thaw and SetLag say, which is how a test makes a name server
// lag. The records c was started with (SOA, NS, …) stay as they are.
func (a *API) MirrorTo(c *dnstest.Cluster) (*Mirror, error) {
	m := &Mirror{cluster: c, zone: normalName(c.Origin()), held: map[string]int{}}
	a.mu.Lock()
	z := a.zoneByName(m.zone)
	if z == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("cftest: mirror: no zone %q", m.zone)
	}
	var initial []Change
	for _, r := range z.records {
		initial = append(initial, Change{Zone: z.Name, Op: OpCreate, Record: *r})
	}
	a.hooks = append(a.hooks, m.apply)
	// The records there are now reach the cluster before any later change:
	// the copy takes its turn as a batch of changes would.
	prev, done := a.takeTurn()
	a.mu.Unlock()
	if prev != nil {
		<-prev
	}
	for _, ch := range initial {
		m.apply(ch)
	}
	close(done)
	if err := m.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// apply makes one change on the cluster's primary.
func (m *Mirror) apply(ch Change) {
	if ch.Zone != m.zone {
		return
	}
	rr, err := ch.Record.RR()
	if err == nil {
		// Identical records (AddIdenticalRecord) are one record in DNS,
		// served until the last of them is deleted.
		key := dataKey(rr)
		m.mu.Lock()
		switch {
		case ch.Op != OpDelete:
			m.held[key]++
		case m.held[key] > 1:
			m.held[key]--
		default:
			delete(m.held, key)
		}
		stillHeld := m.held[key] > 0
		m.mu.Unlock()
		err = m.cluster.Update(func(z *dnstest.Zone) error {
			if ch.Op == OpDelete {
				if !stillHeld {
					z.Remove(rr)
				}
				return nil
			}
			return z.Add(rr)
		})
	}
	if err != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.errs = append(m.errs, fmt.Errorf("cftest: mirror %s %s %s: %w", ch.Op, ch.Record.Name, ch.Record.Type, err))
	}
}

// dataKey identifies a record by owner, type and data, as DNS does.
func dataKey(rr dns.RR) string {
	c := dns.Copy(rr)
	c.Header().Ttl = 0
	return c.String()
}

// Err returns the changes that could not be applied to the cluster, or nil.
func (m *Mirror) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return errors.Join(m.errs...)
}
