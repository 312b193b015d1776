package services

import (
	"net"
	"strings"
)

// TLSAOwner is the name a DANE client looks up for the endpoint's TLSA
// records, "_25._tcp.mail.example.org." (RFC 6698 §3, RFC 7672 §2.2.3): from
// the host and port the endpoint names, whatever address connect= dials.
// It is "" for an IP address, which has no TLSA records.
func (e Endpoint) TLSAOwner() string {
	if net.ParseIP(e.Host) != nil || e.Host == "" || e.Port == "" {
		return ""
	}
	return "_" + e.Port + "._tcp." + strings.ToLower(strings.TrimSuffix(e.Host, ".")) + "."
}
