package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

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
	// OK is set when every endpoint served Key and matched the TLSA
	// records a DANE client finds.
	OK bool `json:"ok"`
	// Error says what failed when not OK.
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
}

func validHost(host string) error {
	if err := store.CheckName(host); err != nil || len(host) > 63 {
		return fmt.Errorf("bad member name %q", host)
	}
	return nil
}

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

// Leave removes host from every certificate, with its reports, and
// returns the certificates it served.
func (s *Store) Leave(ctx context.Context, host string) ([]string, error) {
	if err := validHost(host); err != nil {
		return nil, err
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
		if err := json.Unmarshal(data, &m); err != nil || m.Host != host {
			return fmt.Errorf("%s: not a member record", s.certKey(name, "members", host))
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
		if err := json.Unmarshal(data, &r); err != nil || r.Host != host {
			return fmt.Errorf("%s: not a report", s.certKey(name, "reports", host))
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
		if err != nil {
			return nil, err
		}
		if id != set {
			return nil, fmt.Errorf("%s: the fleet's live set is %q, not %s: another run changed it", name, id, set)
		}
		members, err := s.Members(ctx, name)
		if err != nil {
			return nil, err
		}
		reports, err := s.Reports(ctx, name)
		if err != nil {
			return nil, err
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

// Alive keeps this member's liveness key while ctx lasts.
func (s *Store) Alive(ctx context.Context) error {
	sess, err := s.session()
	if err != nil {
		return err
	}
	data, _ := json.Marshal(map[string]any{"host": s.host, "since": s.now().UTC()})
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.cli.put(ctx, s.prefix+"hosts/"+s.host+"/alive", data, sess.id); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

// IsAlive reports whether host's agent runs.
func (s *Store) IsAlive(ctx context.Context, host string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := s.cli.count(ctx, s.prefix+"hosts/"+host+"/alive")
	if err != nil {
		return false, fmt.Errorf("etcd: %w", err)
	}
	return n > 0, nil
}

// WatchLive calls changed with a certificate's name whenever its live set
// changes, looking every interval, until ctx ends. A look that fails is
// logged and tried again at the next: the agent's resync covers the gap.
// Polling (one small request an interval) rather than etcd's watch keeps
// daneroll on plain HTTP.
func (s *Store) WatchLive(ctx context.Context, names []string, every time.Duration, changed func(name string)) error {
	seen := map[string]int64{}
	for _, name := range names {
		if err := store.CheckName(name); err != nil {
			return err
		}
	}
	first := true
	for {
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
				return ctx.Err()
			}
			if err != nil || len(resp.Responses) != len(batch) {
				s.log.Warn("looking for changes of the fleet's live sets", "err", err)
				break
			}
			for i, name := range batch {
				var rev int64
				if r := resp.Responses[i].Range; r != nil && len(r.Kvs) == 1 {
					rev = int64(r.Kvs[0].ModRevision)
				}
				if old, ok := seen[name]; (ok || !first) && old != rev {
					changed(name)
				}
				seen[name] = rev
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// maxOps stays under etcd's default limit of operations in a transaction
// (--max-txn-ops 128).
const maxOps = 100
