package cloudflare

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	cf "github.com/cloudflare/cloudflare-go"
	"github.com/miekg/dns"
)

// Cloudflare's TTL rules: 1 means "automatic", which is 300 seconds for
// records that are not proxied (TLSA and TXT never are); any other TTL must
// be within 60 to 86400 seconds, or 30 to 86400 on Enterprise zones.
const (
	automaticTTL        = 1
	automaticTTLSeconds = 300
	minTTLEnterprise    = 30
	minTTL              = 60
	maxTTL              = 86400
)

// Error codes this package acts on.
const (
	codeRecordNotFound  = 81044 // "Record does not exist."
	codeRecordExists    = 81057 // "Record already exists."
	codeIdenticalRecord = 81058 // "An identical record already exists."
)

// maxTXTString is the longest RFC 1035 character string; Cloudflare splits
// longer ones.
const maxTXTString = 255

// wanted is a record to add or delete, in the API's terms.
type wanted struct {
	owner  string // FQDN, lower case, with the trailing dot
	name   string // owner as Cloudflare writes it: no trailing dot
	rrtype uint16
	typ    string
	ttl    int
	rdata  string    // zone-file presentation of the data
	tlsa   *tlsaData // TLSA only
	txt    []string  // TXT only: the strings as bytes, unescaped
	key    string    // identity: type-specific normal form of the data
}

// tlsaData is the API's structured TLSA data.
type tlsaData struct {
	Usage        uint8  `json:"usage"`
	Selector     uint8  `json:"selector"`
	MatchingType uint8  `json:"matching_type"`
	Certificate  string `json:"certificate"`
}

func fromRR(rr dns.RR) (*wanted, error) {
	if rr == nil {
		return nil, fmt.Errorf("cloudflare: no record")
	}
	h := rr.Header()
	w := &wanted{owner: strings.ToLower(dns.Fqdn(h.Name))}
	w.name = strings.TrimSuffix(w.owner, ".")
	w.rdata = strings.TrimSpace(strings.TrimPrefix(rr.String(), h.String()))
	switch r := rr.(type) {
	case *dns.TLSA:
		if _, err := hex.DecodeString(r.Certificate); err != nil || r.Certificate == "" {
			return nil, fmt.Errorf("cloudflare: TLSA record for %s: association data is not hexadecimal", w.name)
		}
		w.rrtype, w.typ = dns.TypeTLSA, "TLSA"
		w.tlsa = &tlsaData{Usage: r.Usage, Selector: r.Selector, MatchingType: r.MatchingType, Certificate: strings.ToLower(r.Certificate)}
		w.key = tlsaKey(r.Usage, r.Selector, r.MatchingType, r.Certificate)
	case *dns.TXT:
		w.rrtype, w.typ = dns.TypeTXT, "TXT"
		w.txt = rawTXT(r.Txt)
		w.key = txtKey(w.txt)
	default:
		return nil, fmt.Errorf("cloudflare: %s records are not supported (only TLSA and TXT)", dns.TypeToString[h.Rrtype])
	}
	ttl := int(h.Ttl)
	switch {
	case ttl < minTTLEnterprise:
		// 1 would even be taken as "automatic" (300 s).
		return nil, fmt.Errorf("cloudflare: %s: TTL %d is below Cloudflare's minimum of %d seconds (%d on Enterprise zones)",
			w.describe(), ttl, minTTL, minTTLEnterprise)
	case ttl > maxTTL:
		return nil, fmt.Errorf("cloudflare: %s: TTL %d is above Cloudflare's maximum of %d seconds", w.describe(), ttl, maxTTL)
	}
	w.ttl = ttl
	return w, nil
}

// describe is the record in short zone-file form, for messages.
func (w *wanted) describe() string {
	return w.name + " " + w.typ + " " + w.rdata
}

func (w *wanted) createParams() cf.CreateDNSRecordParams {
	p := cf.CreateDNSRecordParams{Type: w.typ, Name: w.name, TTL: w.ttl}
	if w.tlsa != nil {
		// The API takes TLSA records only through "data"; "content" is
		// derived from it.
		p.Data = w.tlsa
	} else {
		p.Content = txtContent(w.txt)
	}
	return p
}

func tlsaKey(usage, selector, matching uint8, cert string) string {
	return fmt.Sprintf("%d %d %d %s", usage, selector, matching, strings.ToLower(cert))
}

// miekg/dns keeps TXT strings in presentation form: a backslash escapes
// the next character or starts a \DDD byte, as in a zone file. rawTXT
// turns such strings into the bytes a resolver gets.
func rawTXT(txt []string) []string {
	out := make([]string, 0, len(txt))
	for _, s := range txt {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c != '\\' || i+1 == len(s) {
				b.WriteByte(c)
				continue
			}
			if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
				n, _ := strconv.Atoi(s[i+1 : i+4])
				b.WriteByte(byte(n))
				i += 3
				continue
			}
			b.WriteByte(s[i+1])
			i++
		}
		out = append(out, b.String())
	}
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// splitTXT splits strings longer than 255 bytes, as Cloudflare does.
func splitTXT(raw []string) []string {
	var out []string
	for _, s := range raw {
		for len(s) > maxTXTString {
			out = append(out, s[:maxTXTString])
			s = s[maxTXTString:]
		}
		out = append(out, s)
	}
	return out
}

// txtKey is the identity of TXT data: its strings as a resolver gets them.
func txtKey(raw []string) string {
	return strconv.Quote(strings.Join(splitTXT(raw), "\x00"))
}

// escapeTXT writes one string in presentation form, quoted.
func escapeTXT(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// txtContent is TXT content as the API asks for it: RFC 1035 quoted
// character strings of at most 255 bytes each.
func txtContent(raw []string) string {
	var b strings.Builder
	for i, s := range splitTXT(raw) {
		if i > 0 {
			b.WriteByte(' ')
		}
		escapeTXT(&b, s)
	}
	return b.String()
}

// presentTXT turns raw strings into miekg/dns's presentation form.
func presentTXT(raw []string) []string {
	out := make([]string, len(raw))
	for i, s := range raw {
		var b strings.Builder
		escapeTXT(&b, s)
		q := b.String()
		out[i] = q[1 : len(q)-1]
	}
	return out
}

// apiRecord is a record read from the API.
type apiRecord struct {
	id  string
	rr  dns.RR
	key string
}

// ttlFromAPI maps Cloudflare's TTL to seconds.
func ttlFromAPI(ttl int) uint32 {
	if ttl <= automaticTTL {
		return automaticTTLSeconds
	}
	return uint32(ttl)
}

func toAPIRecord(owner string, rrtype uint16, r cf.DNSRecord) (apiRecord, error) {
	hdr := dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttlFromAPI(r.TTL)}
	switch rrtype {
	case dns.TypeTLSA:
		d, err := tlsaFromAPI(r)
		if err != nil {
			return apiRecord{}, err
		}
		rr := &dns.TLSA{Hdr: hdr, Usage: d.Usage, Selector: d.Selector, MatchingType: d.MatchingType, Certificate: d.Certificate}
		return apiRecord{id: r.ID, rr: rr, key: tlsaKey(d.Usage, d.Selector, d.MatchingType, d.Certificate)}, nil
	case dns.TypeTXT:
		raw, err := txtFromContent(r.Content)
		if err != nil {
			return apiRecord{}, err
		}
		return apiRecord{id: r.ID, rr: &dns.TXT{Hdr: hdr, Txt: presentTXT(splitTXT(raw))}, key: txtKey(raw)}, nil
	}
	return apiRecord{}, fmt.Errorf("unsupported type %s", dns.TypeToString[rrtype])
}

// tlsaFromAPI reads a TLSA record's data object, or its content when the
// data object is missing.
func tlsaFromAPI(r cf.DNSRecord) (tlsaData, error) {
	var d tlsaData
	if m, ok := r.Data.(map[string]any); ok && len(m) > 0 {
		var err error
		if d.Usage, err = octet(m, "usage"); err != nil {
			return d, err
		}
		if d.Selector, err = octet(m, "selector"); err != nil {
			return d, err
		}
		if d.MatchingType, err = octet(m, "matching_type"); err != nil {
			return d, err
		}
		d.Certificate, _ = m["certificate"].(string)
	} else {
		f := strings.Fields(r.Content)
		if len(f) < 4 {
			return d, fmt.Errorf("TLSA content %q has no data", r.Content)
		}
		for i, dst := range []*uint8{&d.Usage, &d.Selector, &d.MatchingType} {
			n, err := strconv.ParseUint(f[i], 10, 8)
			if err != nil {
				return d, fmt.Errorf("TLSA content %q: %w", r.Content, err)
			}
			*dst = uint8(n)
		}
		d.Certificate = strings.Join(f[3:], "")
	}
	d.Certificate = strings.ToLower(d.Certificate)
	if _, err := hex.DecodeString(d.Certificate); err != nil || d.Certificate == "" {
		return d, fmt.Errorf("TLSA association data %q is not hexadecimal", d.Certificate)
	}
	return d, nil
}

func octet(m map[string]any, key string) (uint8, error) {
	switch v := m[key].(type) {
	case float64:
		if v >= 0 && v <= 255 && v == float64(uint8(v)) {
			return uint8(v), nil
		}
	case string:
		if n, err := strconv.ParseUint(v, 10, 8); err == nil {
			return uint8(n), nil
		}
	}
	return 0, fmt.Errorf("TLSA data.%s is %v", key, m[key])
}

// txtFromContent reads TXT content, quoted character strings as the API
// asks for or, as older records were stored, one unquoted string, into the
// strings' bytes.
func txtFromContent(content string) ([]string, error) {
	content = strings.TrimSpace(content)
	if !strings.HasPrefix(content, `"`) {
		return []string{content}, nil
	}
	rr, err := dns.NewRR(". 0 IN TXT " + content)
	if err != nil {
		return nil, fmt.Errorf("TXT content %q: %w", content, err)
	}
	t, ok := rr.(*dns.TXT)
	if !ok {
		return nil, fmt.Errorf("TXT content %q does not parse", content)
	}
	return rawTXT(t.Txt), nil
}
