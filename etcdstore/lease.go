package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// session is a lease of this process, kept alive in the background: the
// certificates' locks and the liveness key live on it, and go when the
// process dies.
type session struct {
	id   int64
	stop context.CancelFunc
	// done is closed when the lease may be gone: etcd said it expired,
	// or no keep-alive got through for a whole TTL.
	done     chan struct{}
	doneOnce sync.Once
	finished chan struct{} // closed when the keep-alive loop returned
}

func newSession(c *client, ttl, timeout time.Duration) (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The lease lasts ttl from when etcd granted it, which is after now.
	asked := time.Now()
	id, err := c.grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("etcd: lease: %w", err)
	}
	kctx, stop := context.WithCancel(context.Background())
	s := &session{id: id, stop: stop, done: make(chan struct{}), finished: make(chan struct{})}
	go s.keepAlive(kctx, c, ttl, asked)
	return s, nil
}

// keepAlive renews the lease three times a TTL, as etcd's own client does.
func (s *session) keepAlive(ctx context.Context, c *client, ttl time.Duration, granted time.Time) {
	defer close(s.finished)
	every := max(ttl/3, 100*time.Millisecond)
	// lastSent is when the last renewal that got through was sent: the
	// lease lasts at least ttl from then.
	lastSent := granted
	wait := every
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, every)
		left, err := c.keepAlive(rctx, s.id)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && left > 0:
			lastSent, wait = sent, every
		case err == nil, time.Since(lastSent) >= ttl-every/2:
			// Expired, or it may be by the next try: what was held on
			// it is not.
			s.end()
			return
		default:
			wait = every / 4
		}
	}
}

func (s *session) end() { s.doneOnce.Do(func() { close(s.done) }) }

func (s *session) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// close stops the renewals and revokes the lease, which frees at once
// what was held on it.
func (s *session) close(c *client, timeout time.Duration) error {
	s.stop()
	<-s.finished
	s.end()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.revoke(ctx, s.id)
}

// mutex is one certificate's lock: etcd's recipe (the one of
// go.etcd.io/etcd/client/v3/concurrency). Each contender puts a key
// under the lock's prefix on its lease; the key created first holds the
// lock. The holder's key and its create revision fence every write.
type mutex struct {
	pfx  string
	key  string
	rev  int64
	sess *session
}

// owns is the condition of every fenced write.
func (m *mutex) owns() cmp { return createdAt(m.key, m.rev) }

// tryLock puts this session's key and reports whether it came first.
func (s *Store) tryLock(ctx context.Context, pfx string, sess *session) (*mutex, bool, error) {
	m := &mutex{pfx: pfx, key: fmt.Sprintf("%s%016x", pfx, sess.id), sess: sess}
	resp, err := s.cli.txn(ctx,
		[]cmp{createdAt(m.key, 0)},
		[]op{opPut(m.key, nil, sess.id), opGet(m.key), opFirstCreated(pfx)},
		[]op{opGet(m.key), opFirstCreated(pfx)})
	if err != nil {
		// etcd may have queued the key and the answer got lost: take it
		// out (the key is this lease's alone), or it would take the lock
		// for nobody when the holder lets go.
		rctx, cancel := s.ctx()
		_, _ = s.cli.txn(rctx, nil, []op{opDelete(m.key)}, nil)
		cancel()
		return nil, false, err
	}
	rs := resp.Responses
	if resp.Succeeded && len(rs) == 3 {
		rs = rs[1:]
	}
	if len(rs) != 2 || rs[0].Range == nil || rs[1].Range == nil || len(rs[0].Range.Kvs) != 1 || len(rs[1].Range.Kvs) != 1 {
		return nil, false, errors.New("an answer without the lock's keys")
	}
	m.rev = int64(rs[0].Range.Kvs[0].CreateRevision)
	return m, int64(rs[1].Range.Kvs[0].CreateRevision) == m.rev, nil
}

// first reports whether m's key is the first under its prefix (and
// still there).
func (s *Store) first(ctx context.Context, m *mutex) (bool, error) {
	resp, err := s.cli.txn(ctx, []cmp{m.owns()}, []op{opFirstCreated(m.pfx)}, nil)
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		return false, errors.New("this run's lease expired while it waited")
	}
	if len(resp.Responses) != 1 || resp.Responses[0].Range == nil || len(resp.Responses[0].Range.Kvs) != 1 {
		return false, errors.New("an answer without the lock's keys")
	}
	return int64(resp.Responses[0].Range.Kvs[0].CreateRevision) == m.rev, nil
}

// release deletes m's key, and extra with it, if m still holds it.
func (s *Store) release(ctx context.Context, m *mutex, extra ...string) error {
	ops := []op{opDelete(m.key)}
	for _, k := range extra {
		ops = append(ops, opDelete(k))
	}
	_, err := s.cli.txn(ctx, []cmp{m.owns()}, ops, nil)
	return err
}
