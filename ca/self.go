package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/badge-dev/badge/storage"
)

// ServerPath is the path of the SPIFFE ID the server gives itself for its
// public TLS listener: spiffe://TRUST_DOMAIN/badge/server.
const ServerPath = "/badge/server"

// serverEntryID names the server's own entry in serial records.
const serverEntryID = "badge-server"

// ServerEntry returns the entry of the server's own identity,
// spiffe://TRUST_DOMAIN/badge/server, with the given host names (DNS names,
// or IP addresses, which become IP SANs). It is not
// registered and matches no caller; SignX509SVID signs the certificate of
// the public listener with it, like any SVID (five minutes, recorded serial,
// revocable).
func (a *Authority) ServerEntry(hosts []string) (*Entry, error) {
	id, err := a.cfg.TrustDomain.ID().AppendPath(ServerPath)
	if err != nil {
		return nil, err
	}
	var dns []string
	var ips []net.IP
	for _, n := range hosts {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		n = strings.ToLower(n)
		if err := validateDNSName(n); err != nil {
			return nil, invalid("dns_name", n, "%v", err)
		}
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"badge"}},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dns,
		IPAddresses:           ips,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(dns) > 0 {
		tmpl.Subject.CommonName = dns[0]
	}
	rec := storage.Entry{ID: serverEntryID, SPIFFEID: id.String(), DNSNames: dns, Revision: 1}
	return &Entry{Record: rec, ID: id, tmpl: tmpl, leaf: &leafEncoderCache{}}, nil
}
