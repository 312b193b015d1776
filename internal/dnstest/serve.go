package dnstest

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"net"
	"time"

	"github.com/miekg/dns"
)

// maxUDP is the largest UDP answer the servers send (BIND's default
// max-udp-size and the DNS flag day 2020 value).
const maxUDP = 1232

// serve answers one request on server s.
func (c *Cluster) serve(s *server, w dns.ResponseWriter, r *dns.Msg) {
	now := c.now()
	transport := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		transport = "tcp"
	}
	m := new(dns.Msg)
	m.SetReply(r)

	reqTSIG := r.IsTsig()
	key := ""
	if reqTSIG != nil {
		key = dns.CanonicalName(reqTSIG.Hdr.Name)
	}
	opt := r.IsEdns0()
	do := opt != nil && opt.Do()
	var tsigErr uint16
	switch {
	case reqTSIG != nil && w.TsigStatus() != nil:
		// Like BIND: NOTAUTH, the reason in the TSIG error field.
		m.Rcode = dns.RcodeNotAuth
		tsigErr = tsigRcode(w.TsigStatus())
	case opt != nil && opt.Version() != 0:
		m.Rcode = dns.RcodeBadVers
	case r.Opcode == dns.OpcodeQuery:
		c.query(s, now, r.Question[0], do, m)
	case r.Opcode == dns.OpcodeUpdate:
		m.Rcode = c.update(s, r, key)
	default:
		m.Rcode = dns.RcodeNotImplemented
	}

	size := dns.MaxMsgSize
	if transport == "udp" {
		size = dns.MinMsgSize
		if opt != nil {
			size = int(min(max(opt.UDPSize(), dns.MinMsgSize), maxUDP))
		}
	}
	if opt != nil {
		m.SetEdns0(maxUDP, do)
	}
	if reqTSIG != nil {
		c.signReply(m, reqTSIG, tsigErr, size)
	} else {
		m.Truncate(size)
	}
	// Logged before the answer leaves, so a client that has its answer
	// finds its request in Queries.
	q := r.Question[0]
	c.log.Debug("dnstest: request", "server", s.index, "transport", transport, "opcode", dns.OpcodeToString[r.Opcode],
		"name", q.Name, "type", dns.TypeToString[q.Qtype], "do", do, "rcode", dns.RcodeToString[m.Rcode])
	c.mu.Lock()
	c.queries = append(c.queries, QueryLog{
		Time: now, Server: s.index, Transport: transport, Opcode: r.Opcode,
		Name: q.Name, Type: q.Qtype, DO: do, RD: r.RecursionDesired,
		TSIGKey: key, Rcode: m.Rcode, Request: r.Copy(),
	})
	c.mu.Unlock()
	if err := w.WriteMsg(m); err != nil {
		c.log.Debug("dnstest: write answer", "server", s.index, "err", err)
	}
}

// query fills m with the answer to q from what s serves now.
func (c *Cluster) query(s *server, now time.Time, q dns.Question, do bool, m *dns.Msg) {
	if q.Qclass != dns.ClassINET || q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		// No other classes, and no zone transfers (allow-transfer { none; }).
		m.Rcode = dns.RcodeRefused
		return
	}
	c.mu.Lock()
	v := c.current(s, now)
	c.mu.Unlock()
	res := v.resolve(q.Name, q.Qtype, do)
	m.Rcode, m.Authoritative = res.rcode, res.aa
	m.Answer, m.Ns, m.Extra = res.answer, res.ns, res.extra
}

// signReply adds the TSIG record the server signs the reply with (when the
// request's signature verified) or that carries the TSIG error. The time is
// the wall clock: the TSIG check on both ends uses it, not Options.Now.
func (c *Cluster) signReply(m *dns.Msg, req *dns.TSIG, tsigErr uint16, size int) {
	// dns.Msg.Truncate leaves signed messages alone: a reply too big for
	// the client's buffer keeps only its header, question and OPT.
	const tsigRoom = 128
	if m.Len()+tsigRoom > size {
		m.Answer, m.Ns, m.Truncated = nil, nil, true
		var extra []dns.RR
		if opt := m.IsEdns0(); opt != nil {
			extra = []dns.RR{opt}
		}
		m.Extra = extra
	}
	now := time.Now()
	t := &dns.TSIG{
		Hdr:        dns.RR_Header{Name: req.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm:  req.Algorithm,
		Fudge:      300,
		TimeSigned: uint64(now.Unix()),
		OrigId:     m.Id,
		Error:      tsigErr,
	}
	if tsigErr == dns.RcodeBadTime {
		// RFC 8945 §5.2.3: the server's time, so the client sees the skew.
		var b [6]byte
		for i, u := 0, uint64(now.Unix()); i < 6; i++ {
			b[5-i] = byte(u >> (8 * i))
		}
		t.OtherLen, t.OtherData = 6, hex.EncodeToString(b[:])
	}
	m.Extra = append(m.Extra, t)
}

// tsigRcode maps a TSIG verification failure to the TSIG error code.
func tsigRcode(err error) uint16 {
	switch {
	case errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg):
		return dns.RcodeBadKey
	case errors.Is(err, dns.ErrTime):
		return dns.RcodeBadTime
	default:
		return dns.RcodeBadSig
	}
}

// tsigKeys is the servers' TSIG keyring: canonical key name to base64
// secret. Unlike dns.Server.TsigSecret it finds keys whatever the case of
// the name in the request.
type tsigKeys map[string]string

func (k tsigKeys) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	secret, ok := k[dns.CanonicalName(t.Hdr.Name)]
	if !ok {
		return nil, dns.ErrSecret
	}
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return nil, dns.ErrSecret
	}
	var h func() hash.Hash
	switch dns.CanonicalName(t.Algorithm) {
	case dns.HmacSHA1:
		h = sha1.New
	case dns.HmacSHA224:
		h = sha256.New224
	case dns.HmacSHA256:
		h = sha256.New
	case dns.HmacSHA384:
		h = sha512.New384
	case dns.HmacSHA512:
		h = sha512.New
	default:
		return nil, dns.ErrKeyAlg
	}
	mac := hmac.New(h, raw)
	mac.Write(msg)
	return mac.Sum(nil), nil
}

func (k tsigKeys) Verify(msg []byte, t *dns.TSIG) error {
	want, err := k.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return dns.ErrSig
	}
	return nil
}
