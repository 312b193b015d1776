package etcdstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// client speaks etcd's v3 API through its JSON gateway (the same API as
// its gRPC one, served on the client port at /v3/…; etcd.io/docs/v3.4/
// dev-guide/api_grpc_gateway/). It needs nothing beyond net/http: the gRPC
// client would double daneroll's size and start-up time for every user,
// fleet or not.
type client struct {
	endpoints []string
	hc        *http.Client

	mu   sync.Mutex // guards next
	next int        // the endpoint to try first: the last that answered
}

// maxResponse bounds what daneroll reads from etcd in one answer.
const maxResponse = 16 << 20

func newClient(endpoints []string, tc *tls.Config, timeout time.Duration) *client {
	tr := &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
		ForceAttemptHTTP2:   true,
		// etcd is never reached through a proxy.
		Proxy: nil,
	}
	eps := make([]string, len(endpoints))
	for i, ep := range endpoints {
		eps[i] = strings.TrimSuffix(ep, "/")
	}
	return &client{endpoints: eps, hc: &http.Client{Transport: tr,
		// etcd does not redirect; a redirect would replay the request,
		// maybe to plain http.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// apiError is an error etcd answered with.
type apiError struct {
	Status  int
	Code    int    `json:"code"`
	Message string `json:"message"`
	Err     string `json:"error"`
}

func (e *apiError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Err
	}
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return clean(msg, 500)
}

// retryable: another member may answer (no leader, leader changed,
// unavailable, a member shutting down).
func (e *apiError) retryable() bool {
	return e.Status >= 500 || e.Code == 14 || strings.Contains(e.Message, "leader")
}

// call posts req to path and decodes the answer into resp, trying every
// endpoint in turn, and again while ctx lasts, when one cannot answer.
func (c *client) call(ctx context.Context, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var last error
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		first := c.next
		c.mu.Unlock()
		for i := range c.endpoints {
			n := (first + i) % len(c.endpoints)
			err := c.post(ctx, c.endpoints[n]+path, body, resp)
			if err == nil {
				c.mu.Lock()
				c.next = n
				c.mu.Unlock()
				return nil
			}
			last = err
			var ae *apiError
			if errors.As(err, &ae) && !ae.retryable() {
				return err
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
		}
		// Every member failed: an election takes a moment.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)):
		}
	}
}

func (c *client) post(ctx context.Context, url string, body []byte, resp any) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.hc.Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponse+1))
	if err != nil {
		return err
	}
	if len(data) > maxResponse {
		return fmt.Errorf("an answer of more than %d MiB", maxResponse>>20)
	}
	if hresp.StatusCode != http.StatusOK {
		ae := &apiError{Status: hresp.StatusCode}
		_ = json.Unmarshal(data, ae)
		return ae
	}
	// A streaming call (lease keepalive) wraps its answer in "result".
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte(`{"result"`)) {
		var wrapped struct {
			Result json.RawMessage `json:"result"`
			Error  *apiError       `json:"error"`
		}
		if err := json.Unmarshal(data, &wrapped); err != nil {
			return fmt.Errorf("%s: %w", url, err)
		}
		if wrapped.Error != nil {
			wrapped.Error.Status = http.StatusInternalServerError
			return wrapped.Error
		}
		data = wrapped.Result
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return nil
}

// i64 is an int64 as the gateway writes it: a JSON string.
type i64 int64

func (n i64) MarshalJSON() ([]byte, error) {
	return []byte(`"` + strconv.FormatInt(int64(n), 10) + `"`), nil
}

func (n *i64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	*n = i64(v)
	return err
}

type header struct {
	Revision i64 `json:"revision"`
}

// kv is a key-value pair; []byte fields travel in base64, as
// encoding/json writes them.
type kv struct {
	Key            []byte `json:"key"`
	Value          []byte `json:"value"`
	CreateRevision i64    `json:"create_revision"`
	ModRevision    i64    `json:"mod_revision"`
	Version        i64    `json:"version"`
	Lease          i64    `json:"lease"`
}

type rangeRequest struct {
	Key        []byte `json:"key"`
	RangeEnd   []byte `json:"range_end,omitempty"`
	Limit      i64    `json:"limit,omitempty"`
	KeysOnly   bool   `json:"keys_only,omitempty"`
	CountOnly  bool   `json:"count_only,omitempty"`
	SortOrder  string `json:"sort_order,omitempty"`
	SortTarget string `json:"sort_target,omitempty"`
}

type rangeResponse struct {
	Header header `json:"header"`
	Kvs    []kv   `json:"kvs"`
	Count  i64    `json:"count"`
}

type putRequest struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
	Lease i64    `json:"lease,omitempty"`
}

type deleteRequest struct {
	Key      []byte `json:"key"`
	RangeEnd []byte `json:"range_end,omitempty"`
}

// prefixEnd is the range end that makes key a prefix.
func prefixEnd(key string) []byte {
	end := []byte(key)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// op is one operation of a transaction.
type op struct {
	Range  *rangeRequest  `json:"request_range,omitempty"`
	Put    *putRequest    `json:"request_put,omitempty"`
	Delete *deleteRequest `json:"request_delete_range,omitempty"`
}

func opPut(key string, value []byte, lease int64) op {
	return op{Put: &putRequest{Key: []byte(key), Value: value, Lease: i64(lease)}}
}

func opDelete(key string) op { return op{Delete: &deleteRequest{Key: []byte(key)}} }

func opGet(key string) op { return op{Range: &rangeRequest{Key: []byte(key)}} }

// firstCreated gets the key under pfx created first.
func opFirstCreated(pfx string) op {
	return op{Range: &rangeRequest{Key: []byte(pfx), RangeEnd: prefixEnd(pfx), Limit: 1, SortOrder: "ASCEND", SortTarget: "CREATE"}}
}

// cmp is one condition of a transaction.
type cmp struct {
	Target         string `json:"target"`
	Result         string `json:"result"`
	Key            []byte `json:"key"`
	CreateRevision *i64   `json:"create_revision,omitempty"`
}

// createdAt holds when key was created at revision rev (0: it does not
// exist).
func createdAt(key string, rev int64) cmp {
	r := i64(rev)
	return cmp{Target: "CREATE", Result: "EQUAL", Key: []byte(key), CreateRevision: &r}
}

// exists holds when key exists.
func exists(key string) cmp {
	r := i64(0)
	return cmp{Target: "CREATE", Result: "GREATER", Key: []byte(key), CreateRevision: &r}
}

type txnRequest struct {
	Compare []cmp `json:"compare"`
	Success []op  `json:"success"`
	Failure []op  `json:"failure"`
}

type txnResponse struct {
	Header    header `json:"header"`
	Succeeded bool   `json:"succeeded"`
	Responses []struct {
		Range *rangeResponse `json:"response_range"`
	} `json:"responses"`
}

func (c *client) get(ctx context.Context, key string) (*kv, error) {
	var resp rangeResponse
	if err := c.call(ctx, "/v3/kv/range", rangeRequest{Key: []byte(key)}, &resp); err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return &resp.Kvs[0], nil
}

// list reads the keys under pfx (without values when keysOnly).
func (c *client) list(ctx context.Context, pfx string, keysOnly bool) ([]kv, error) {
	var resp rangeResponse
	if err := c.call(ctx, "/v3/kv/range", rangeRequest{Key: []byte(pfx), RangeEnd: prefixEnd(pfx), KeysOnly: keysOnly}, &resp); err != nil {
		return nil, err
	}
	return resp.Kvs, nil
}

func (c *client) count(ctx context.Context, pfx string) (int64, error) {
	var resp rangeResponse
	if err := c.call(ctx, "/v3/kv/range", rangeRequest{Key: []byte(pfx), RangeEnd: prefixEnd(pfx), CountOnly: true}, &resp); err != nil {
		return 0, err
	}
	return int64(resp.Count), nil
}

func (c *client) put(ctx context.Context, key string, value []byte, lease int64) error {
	var resp struct{}
	return c.call(ctx, "/v3/kv/put", putRequest{Key: []byte(key), Value: value, Lease: i64(lease)}, &resp)
}

func (c *client) txn(ctx context.Context, cmps []cmp, success, failure []op) (*txnResponse, error) {
	var resp txnResponse
	if cmps == nil {
		cmps = []cmp{}
	}
	if success == nil {
		success = []op{}
	}
	if failure == nil {
		failure = []op{}
	}
	if err := c.call(ctx, "/v3/kv/txn", txnRequest{Compare: cmps, Success: success, Failure: failure}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *client) grant(ctx context.Context, ttl time.Duration) (int64, error) {
	var resp struct {
		ID    i64    `json:"ID"`
		TTL   i64    `json:"TTL"`
		Error string `json:"error"`
	}
	if err := c.call(ctx, "/v3/lease/grant", struct {
		TTL i64 `json:"TTL"`
	}{i64((ttl + time.Second - 1) / time.Second)}, &resp); err != nil {
		return 0, err
	}
	if resp.Error != "" || resp.ID == 0 {
		return 0, fmt.Errorf("refused: %s", clean(resp.Error, 200))
	}
	return int64(resp.ID), nil
}

// keepAlive renews a lease and returns its TTL; 0 means it expired.
func (c *client) keepAlive(ctx context.Context, id int64) (time.Duration, error) {
	var resp struct {
		TTL i64 `json:"TTL"`
	}
	if err := c.call(ctx, "/v3/lease/keepalive", struct {
		ID i64 `json:"ID"`
	}{i64(id)}, &resp); err != nil {
		return 0, err
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

func (c *client) revoke(ctx context.Context, id int64) error {
	var resp struct{}
	return c.call(ctx, "/v3/lease/revoke", struct {
		ID i64 `json:"ID"`
	}{i64(id)}, &resp)
}

// maxWatchMessage bounds one message of a watch stream: the changes of
// one etcd transaction, which etcd bounds at 1.5 MiB (--max-request-bytes),
// in base64 and JSON.
const maxWatchMessage = 4 << 20

// watch streams the changes of the keys under pfx, from revision from on
// (0: from now), from the endpoint that answered last, calling each with a
// changed key and its new revision,
// until ctx ends or the stream breaks (a member going down, compaction):
// it returns why. The gateway writes one JSON message a line.
func (c *client) watch(ctx context.Context, pfx string, from int64, each func(key string, rev int64)) error {
	create := map[string]any{"key": []byte(pfx), "range_end": prefixEnd(pfx)}
	if from > 0 {
		create["start_revision"] = i64(from)
	}
	body, err := json.Marshal(map[string]any{"create_request": create})
	if err != nil {
		return err
	}
	c.mu.Lock()
	ep := c.endpoints[c.next]
	c.mu.Unlock()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, ep+"/v3/watch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := c.hc.Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK {
		return &apiError{Status: hresp.StatusCode}
	}
	sc := bufio.NewScanner(hresp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxWatchMessage)
	for sc.Scan() {
		var msg struct {
			Result *struct {
				Created  bool `json:"created"`
				Canceled bool `json:"canceled"`
				Events   []struct {
					Type string `json:"type"`
					Kv   kv     `json:"kv"`
				} `json:"events"`
				CancelReason string `json:"cancel_reason"`
			} `json:"result"`
			Error *apiError `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		switch {
		case msg.Error != nil:
			return msg.Error
		case msg.Result == nil:
			return errors.New("watch: a message without a result")
		case msg.Result.Canceled:
			return fmt.Errorf("watch canceled: %s", clean(msg.Result.CancelReason, 200))
		}
		for _, ev := range msg.Result.Events {
			each(string(ev.Kv.Key), int64(ev.Kv.ModRevision))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return errors.New("watch: the stream ended")
}
