package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daneroll/daneroll/internal/oneline"
	"github.com/daneroll/daneroll/store"
)

// Member is a host that serves a certificate: a deploy waits for its
// report.
type Member struct {
	Host string `json:"host"`
	// Endpoints are its probes of the certificate's services.
	Endpoints []string  `json:"endpoints"`
	Since     time.Time `json:"since"`
}

// Report is what a member's agent last did for a certificate.
type Report struct {
	Host string `json:"host"`
	// Set is the fleet's set it installed, for the write of live at
	// LiveRevision.
	Set          string `json:"set"`
	LiveRevision int64  `json:"live_revision"`
	// Key is the ID (SPKI digest) of the key of Set.
	Key string `json:"key"`
	// Endpoints maps each endpoint the agent probed to the key (SPKI
	// digest) it served last.
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// OK is set when every endpoint served Key and matched the TLSA
	// records a DANE client finds.
	OK bool `json:"ok"`
	// Error says what failed when not OK.
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
}

// validHost accepts what the configuration accepts as [store] host.
func validHost(host string) error {
	if len(host) == 0 || len(host) > 63 || !hostName.MatchString(host) {
		return fmt.Errorf("bad member name %q", host)
	}
	return nil
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Bounds on what members write.
const (
	maxEndpoints   = 64
	maxReportError = 1 << 10
)

// clean makes text from etcd safe to print on one line (oneline.Clean),
// and keeps it to limit bytes, whatever its runes.
func clean(text string, limit int) string {
	text = oneline.Clean(text, limit)
	if len(text) > limit+len("…") {
		text = strings.ToValidUTF8(text[:limit], "") + "…"
	}
	return text
}

// check refuses a member record no agent writes.
func (m *Member) check(host string) error {
	if m.Host != host || len(m.Endpoints) > maxEndpoints {
		return errors.New("not a member record")
	}
	for _, ep := range m.Endpoints {
		if len(ep) > 1024 {
			return errors.New("an endpoint longer than 1 KiB")
		}
	}
	return nil
}

// check refuses a report no agent writes, and cleans its error text.
func (r *Report) check(host string) error {
	if r.Host != host || (r.Set != "" && !store.ValidSetID(r.Set)) || (r.Key != "" && !hexKey.MatchString(r.Key)) || r.LiveRevision < 0 {
		return errors.New("not a report")
	}
	if len(r.Endpoints) > maxEndpoints {
		return errors.New("a report of too many endpoints")
	}
	for ep, key := range r.Endpoints {
		if len(ep) > 1024 || !hexKey.MatchString(key) {
			return errors.New("not a report")
		}
	}
	r.Error = clean(r.Error, maxReportError)
	return nil
}

var hexKey = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Register records this member as serving certificate name at endpoints.
// It stays registered until Leave: a member that is down must hold
// deploys back, since it may come back serving the previous key.
func (s *Store) Register(ctx context.Context, name string, endpoints []string) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	k := s.certKey(name, "members", s.host)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	since := s.now().UTC()
	if kv, err := s.cli.get(ctx, k); err == nil && kv != nil && len(kv.Value) <= maxRecord {
		var old Member
		if json.Unmarshal(kv.Value, &old) == nil && !old.Since.IsZero() {
			since = old.Since
		}
	}
	data, err := json.Marshal(Member{Host: s.host, Endpoints: endpoints, Since: since})
	if err != nil {
		return err
	}
	if err := s.cli.put(ctx, k, data, 0); err != nil {
		return fmt.Errorf("etcd: register %s for %s: %w", s.host, name, err)
	}
	return nil
}

// ErrAgentRuns is a Leave refused because the member's agent runs: it
// would register again within a minute.
var ErrAgentRuns = errors.New("its agent is running")

// Leave removes host from every certificate, with its reports, and
// returns the certificates it served. A member whose agent runs leaves
// only with force (its agent registers it again at its next resync).
func (s *Store) Leave(ctx context.Context, host string, force bool) ([]string, error) {
	if err := validHost(host); err != nil {
		return nil, err
	}
	if !force {
		running, err := s.IsAlive(ctx, host)
		if err != nil {
			return nil, err
		}
		if running {
			return nil, fmt.Errorf("member %s: %w (stop it first: systemctl stop daneroll-agent)", host, ErrAgentRuns)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pfx := s.prefix + "certs/"
	kvs, err := s.cli.list(ctx, pfx, true)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	var names []string
	for _, kv := range kvs {
		name, rest, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), pfx), "/")
		if !ok || rest != "members/"+host {
			continue
		}
		if _, err := s.cli.txn(ctx, nil, []op{opDelete(string(kv.Key)), opDelete(s.certKey(name, "reports", host))}, nil); err != nil {
			return names, fmt.Errorf("etcd: %w", err)
		}
		names = append(names, name)
	}
	return names, nil
}

// Members lists the members registered for certificate name.
func (s *Store) Members(ctx context.Context, name string) ([]Member, error) {
	var out []Member
	err := s.list(ctx, name, "members", func(host string, data []byte) error {
		var m Member
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("%s: not a member record", s.certKey(name, "members", host))
		}
		if err := m.check(host); err != nil {
			return fmt.Errorf("%s: %w", s.certKey(name, "members", host), err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// Reports returns the members' reports for certificate name, by host.
func (s *Store) Reports(ctx context.Context, name string) (map[string]Report, error) {
	out := map[string]Report{}
	err := s.list(ctx, name, "reports", func(host string, data []byte) error {
		var r Report
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("%s: not a report", s.certKey(name, "reports", host))
		}
		if err := r.check(host); err != nil {
			return fmt.Errorf("%s: %w", s.certKey(name, "reports", host), err)
		}
		out[host] = r
		return nil
	})
	return out, err
}

func (s *Store) list(ctx context.Context, name, what string, each func(host string, data []byte) error) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pfx := s.certKey(name, what) + "/"
	kvs, err := s.cli.list(ctx, pfx, false)
	if err != nil {
		return fmt.Errorf("etcd: %s: %w", pfx, err)
	}
	for _, kv := range kvs {
		host := strings.TrimPrefix(string(kv.Key), pfx)
		if validHost(host) != nil || len(kv.Value) > maxRecord {
			return fmt.Errorf("etcd: %s: not a record daneroll writes", kv.Key)
		}
		if err := each(host, kv.Value); err != nil {
			return err
		}
	}
	return nil
}

// PutReport records what this member did for certificate name.
func (s *Store) PutReport(ctx context.Context, name string, r Report) error {
	if err := store.CheckName(name); err != nil {
		return err
	}
	r.Host = s.host
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.cli.put(ctx, s.certKey(name, "reports", s.host), data, 0); err != nil {
		return fmt.Errorf("etcd: report %s: %w", name, err)
	}
	return nil
}

// NotServedError is a deploy that some members did not confirm: they
// reported a failure, or nothing in time.
type NotServedError struct {
	Name, Set string
	// Failed maps the members that reported a failure to it.
	Failed map[string]string
	// Silent are the members that reported nothing for this deploy.
	Silent []string
	// Waited is how long the deploy waited.
	Waited time.Duration
}

func (e *NotServedError) Error() string {
	var parts []string
	for _, host := range sortedKeys(e.Failed) {
		parts = append(parts, fmt.Sprintf("member %s failed: %s", host, e.Failed[host]))
	}
	if len(e.Silent) > 0 {
		parts = append(parts, fmt.Sprintf("no report from %s within %s (is its daneroll agent running? a member gone for good leaves with daneroll agent --leave --host NAME)",
			strings.Join(e.Silent, ", "), e.Waited.Round(time.Second)))
	}
	return fmt.Sprintf("set %s of %s is not served everywhere: %s", e.Set, e.Name, strings.Join(parts, "; "))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// AwaitServed waits until every member registered for certificate name,
// but those in skip, has reported serving set with key, for the current
// write of live, and returns the members it heard from. A member that
// reports a failure ends the wait at once; one that reports nothing by
// timeout ends it then. Either is a *NotServedError.
func (s *Store) AwaitServed(ctx context.Context, name, set, key string, timeout time.Duration, skip []string, progress func(waiting []string)) ([]string, error) {
	start := s.now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var said []string
	for {
		id, rev, err := s.LiveRevision(name)
		var members []Member
		var reports map[string]Report
		if err == nil {
			members, err = s.Members(ctx, name)
		}
		if err == nil {
			reports, err = s.Reports(ctx, name)
		}
		if err != nil {
			// etcd briefly unreachable (an election, a member down)
			// is no reason to roll the fleet back: look again until the
			// wait is over.
			s.log.Warn("waiting for the members' reports", "cert", name, "err", err)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-deadline.C:
				return nil, err
			case <-tick.C:
				continue
			}
		}
		if id != set {
			return nil, fmt.Errorf("%s: the fleet's live set is %q, not %s: another run changed it", name, id, set)
		}
		nse := &NotServedError{Name: name, Set: set, Failed: map[string]string{}}
		var hosts []string
		for _, m := range members {
			if slices.Contains(skip, m.Host) {
				continue
			}
			hosts = append(hosts, m.Host)
			r, ok := reports[m.Host]
			switch {
			case !ok || r.LiveRevision != rev:
				nse.Silent = append(nse.Silent, m.Host)
			case !r.OK:
				nse.Failed[m.Host] = r.Error
			case r.Set != set || r.Key != key:
				nse.Failed[m.Host] = fmt.Sprintf("installed set %q with key %.16s, not set %s with key %.16s", r.Set, r.Key, set, key)
			}
		}
		if len(nse.Failed) > 0 {
			nse.Waited = s.now().Sub(start)
			return hosts, nse
		}
		if len(nse.Silent) == 0 {
			return hosts, nil
		}
		if progress != nil && !slices.Equal(said, nse.Silent) {
			said = nse.Silent
			progress(said)
		}
		select {
		case <-ctx.Done():
			return hosts, ctx.Err()
		case <-deadline.C:
			nse.Waited = s.now().Sub(start)
			return hosts, nse
		case <-tick.C:
		}
	}
}

// alive is the value of hosts/HOST/alive.
type alive struct {
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
}

// Alive marks this member's agent as running, on this process's lease,
// while the process lives. Two agents cannot run under one member name
// (two hosts with the same [store] host would answer for each other): an
// agent that finds the name taken by another's lease waits for that lease
// to expire (a killed agent's), as long as the lock's TTL, then fails.
func (s *Store) Alive(ctx context.Context) error {
	sess, err := s.session()
	if err != nil {
		return err
	}
	k := s.prefix + "hosts/" + s.host + "/alive"
	data, _ := json.Marshal(alive{Host: s.host, PID: os.Getpid(), Since: s.now().UTC()})
	deadline := time.Now().Add(s.lockTTL + 2*time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		resp, err := s.cli.txn(rctx, []cmp{createdAt(k, 0)}, []op{opPut(k, data, sess.id)}, []op{opGet(k)})
		cancel()
		if err != nil {
			return fmt.Errorf("etcd: %s: %w", k, err)
		}
		if resp.Succeeded {
			return nil
		}
		var other alive
		if len(resp.Responses) == 1 && resp.Responses[0].Range != nil && len(resp.Responses[0].Range.Kvs) == 1 {
			kv := resp.Responses[0].Range.Kvs[0]
			if int64(kv.Lease) == sess.id {
				// Ours: refresh it.
				rctx, cancel := context.WithTimeout(ctx, s.timeout)
				err := s.cli.put(rctx, k, data, sess.id)
				cancel()
				if err != nil {
					return fmt.Errorf("etcd: %s: %w", k, err)
				}
				return nil
			}
			if len(kv.Value) <= maxRecord {
				_ = json.Unmarshal(kv.Value, &other)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another agent runs as member %s (pid %d, since %s): give each host its own [store] host",
				s.host, other.PID, other.Since.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// AliveHosts returns the members whose agent runs, in one request.
func (s *Store) AliveHosts(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pfx := s.prefix + "hosts/"
	kvs, err := s.cli.list(ctx, pfx, true)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	alive := map[string]bool{}
	for _, kv := range kvs {
		if host, ok := strings.CutSuffix(strings.TrimPrefix(string(kv.Key), pfx), "/alive"); ok && validHost(host) == nil {
			alive[host] = true
		}
	}
	return alive, nil
}

// IsAlive reports whether host's agent runs.
func (s *Store) IsAlive(ctx context.Context, host string) (bool, error) {
	alive, err := s.AliveHosts(ctx)
	return alive[host], err
}

// WatchLive calls changed with a certificate's name whenever its live set
// changes, until ctx ends. It follows etcd's watch stream, which says at
// once, and also looks every interval, which catches what a broken stream
// missed; a look that fails is logged and tried again at the next.
func (s *Store) WatchLive(ctx context.Context, names []string, every time.Duration, changed func(name string)) error {
	want := map[string]bool{}
	for _, name := range names {
		if err := store.CheckName(name); err != nil {
			return err
		}
		want[name] = true
	}
	var mu sync.Mutex // guards seen
	// seen is the newest revision of each live key heard of: revisions
	// only grow, so an older one (a look that began before the stream
	// told of the change) is no news.
	seen := map[string]int64{}
	saw := func(name string, rev int64, first bool) {
		mu.Lock()
		old, ok := seen[name]
		news := rev > old && (ok || !first)
		if rev > old || !ok {
			seen[name] = rev
		}
		mu.Unlock()
		if news {
			changed(name)
		}
	}
	pfx := s.prefix + "certs/"
	// polled is the revision of the last look: the stream starts after
	// it, so that no change falls between the two.
	var polled atomic.Int64
	look := func(first bool) {
		for start := 0; start < len(names); start += maxOps {
			batch := names[start:min(start+maxOps, len(names))]
			ops := make([]op, len(batch))
			for i, name := range batch {
				ops[i] = opGet(s.certKey(name, "live"))
			}
			rctx, cancel := context.WithTimeout(ctx, s.timeout)
			resp, err := s.cli.txn(rctx, nil, ops, nil)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil || len(resp.Responses) != len(batch) {
				s.log.Warn("looking for changes of the fleet's live sets", "err", err)
				return
			}
			if rev := int64(resp.Header.Revision); rev > polled.Load() {
				polled.Store(rev)
			}
			for i, name := range batch {
				var rev int64
				if r := resp.Responses[i].Range; r != nil && len(r.Kvs) == 1 {
					rev = int64(r.Kvs[0].ModRevision)
				}
				saw(name, rev, first)
			}
		}
	}
	look(true)
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		for ctx.Err() == nil {
			from := polled.Load()
			if from > 0 {
				from++
			}
			err := s.cli.watch(ctx, pfx, from, func(key string, rev int64) {
				name, rest, ok := strings.Cut(strings.TrimPrefix(key, pfx), "/")
				if ok && rest == "live" && want[name] {
					saw(name, rev, false)
				}
			})
			if ctx.Err() != nil {
				return
			}
			s.log.Debug("the watch of the fleet's live sets broke; polling meanwhile", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * every):
			}
		}
	}()
	defer func() { <-streamed }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
		look(false)
	}
}

// maxOps stays under etcd's default limit of operations in a transaction
// (--max-txn-ops 128).
const maxOps = 100
