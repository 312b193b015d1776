package cftest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// setData validates the record's data for its type and fills Content, Data
// and the canonical form used to detect identical records.
func setData(rec *Record, content string, data json.RawMessage) *failure {
	switch rec.Type {
	case "":
		return invalid(CodeBadType, "DNS record type is required.")
	case "A", "AAAA":
		ip, err := netip.ParseAddr(strings.TrimSpace(content))
		if err != nil || (rec.Type == "A") != ip.Is4() {
			if rec.Type == "A" {
				return invalid(CodeBadContent, "Content for A record must be a valid IPv4 address.")
			}
			return invalid(CodeBadContent, "Content for AAAA record must be a valid IPv6 address.")
		}
		rec.Content = ip.String()
		rec.canonical = rec.Content
	case "CNAME", "NS", "PTR", "MX":
		host := normalName(content)
		if host == "" || strings.ContainsAny(host, " \t\"") {
			return invalid(CodeBadContent, fmt.Sprintf("Content for %s record is invalid.", rec.Type))
		}
		rec.Content = host
		rec.canonical = host
		if rec.Type == "MX" {
			if rec.Priority == nil {
				return invalid(CodeBadContent, "MX records require a priority.")
			}
			rec.canonical = fmt.Sprintf("%d %s", *rec.Priority, host)
		}
	case "TXT":
		strs, err := parseTXT(content)
		if err != nil {
			return invalid(CodeBadContent, "Content for TXT record is invalid: "+err.Error())
		}
		if len(strs) == 0 {
			return invalid(CodeBadContent, "Content for TXT record is required.")
		}
		rec.Content = content
		rec.canonical = strings.Join(strs, "\x00")
	case "TLSA":
		d, f := parseTLSAData(data)
		if f != nil {
			return f
		}
		rec.Data = d
		rec.Content = fmt.Sprintf("%d %d %d %s", d.Usage, d.Selector, d.MatchingType, d.Certificate)
		rec.canonical = fmt.Sprintf("%d %d %d %s", d.Usage, d.Selector, d.MatchingType, strings.ToLower(d.Certificate))
	default:
		return invalid(CodeBadType, fmt.Sprintf("cftest does not support %s records.", rec.Type))
	}
	return nil
}

// parseTLSAData reads the "data" object of a TLSA record. The API's schema
// has the three numbers as JSON numbers.
func parseTLSAData(raw json.RawMessage) (*TLSAData, *failure) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalid(CodeBadContent, "TLSA records require the data field (usage, selector, matching_type, certificate).")
	}
	var in struct {
		Usage        *float64 `json:"usage"`
		Selector     *float64 `json:"selector"`
		MatchingType *float64 `json:"matching_type"`
		Certificate  *string  `json:"certificate"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, invalid(CodeBadContent, "TLSA data is invalid.")
	}
	num := func(name string, v *float64) (int, *failure) {
		if v == nil {
			return 0, invalid(CodeBadContent, fmt.Sprintf("TLSA data.%s is required.", name))
		}
		if *v != float64(int(*v)) || *v < 0 || *v > 255 {
			return 0, invalid(CodeBadContent, fmt.Sprintf("TLSA data.%s must be an integer from 0 to 255.", name))
		}
		return int(*v), nil
	}
	var d TLSAData
	var f *failure
	if d.Usage, f = num("usage", in.Usage); f != nil {
		return nil, f
	}
	if d.Selector, f = num("selector", in.Selector); f != nil {
		return nil, f
	}
	if d.MatchingType, f = num("matching_type", in.MatchingType); f != nil {
		return nil, f
	}
	if in.Certificate == nil || *in.Certificate == "" {
		return nil, invalid(CodeBadContent, "TLSA data.certificate is required.")
	}
	if _, err := hex.DecodeString(*in.Certificate); err != nil {
		return nil, invalid(CodeBadContent, "TLSA data.certificate must be hexadecimal.")
	}
	d.Certificate = *in.Certificate
	return &d, nil
}

// parseTXT reads TXT content: RFC 1035 character strings, quoted (with \"
// \\ and \DDD escapes) or not, separated by spaces. Content that does not
// start with a quote is one string, as Cloudflare stored TXT content before
// it asked for quotes. Strings longer than 255 bytes are split.
func parseTXT(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, `"`) {
		var out []string
		for len(s) > 255 {
			out = append(out, s[:255])
			s = s[255:]
		}
		if s != "" {
			out = append(out, s)
		}
		return out, nil
	}
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			i++
			continue
		case c != '"':
			return nil, fmt.Errorf("expected a quoted string at offset %d", i)
		}
		var b strings.Builder
		i++
		closed := false
		for i < len(s) {
			c := s[i]
			if c == '"' {
				closed = true
				i++
				break
			}
			if c == '\\' {
				if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
					n, _ := strconv.Atoi(s[i+1 : i+4])
					if n > 255 {
						return nil, fmt.Errorf("bad escape \\%s", s[i+1:i+4])
					}
					b.WriteByte(byte(n))
					i += 4
					continue
				}
				if i+1 >= len(s) {
					return nil, fmt.Errorf("trailing backslash")
				}
				b.WriteByte(s[i+1])
				i += 2
				continue
			}
			b.WriteByte(c)
			i++
		}
		if !closed {
			return nil, fmt.Errorf("unterminated quoted string")
		}
		// Longer strings are split, as the API documents.
		str := b.String()
		for len(str) > 255 {
			out = append(out, str[:255])
			str = str[255:]
		}
		out = append(out, str)
	}
	return out, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
