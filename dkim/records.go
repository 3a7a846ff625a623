package dkim

import (
	"fmt"
	"net/netip"
	"strings"
)

// Record kinds.
const (
	KindDKIM  = "dkim"
	KindSPF   = "spf"
	KindDMARC = "dmarc"
)

// Record is one DNS record an admin publishes for mailgate's mail to pass
// SPF, DKIM and DMARC.
type Record struct {
	Kind    string `json:"kind"` // dkim, spf or dmarc: how Check compares it
	Name    string `json:"name"` // fully qualified, without the final dot
	Type    string `json:"type"`
	Value   string `json:"value"`
	Purpose string `json:"purpose"`
}

// ZoneLine is the record as a line of a zone file, long values split into
// quoted strings of at most 255 bytes.
func (r Record) ZoneLine() string {
	return fmt.Sprintf("%s. IN %s %s", r.Name, r.Type, QuoteTXT(r.Value))
}

// RecordOptions says what the records authorize besides the DKIM keys.
type RecordOptions struct {
	// Domain limits the records to one domain; it may be one without a key
	// (SPF and DMARC only). Empty means every domain that has a key.
	Domain string
	// EgressIP, else EgressHostname, is where direct delivery leaves from:
	// SPF authorizes it with ip4:/ip6: or a:.
	EgressIP       string
	EgressHostname string
	// IncludeGoogle authorizes Gmail's servers (include:_spf.google.com),
	// for the mail the relay sends through Gmail.
	IncludeGoogle bool
	// DMARCRUA receives DMARC aggregate reports (with or without mailto:).
	DMARCRUA string
}

// Records lists, for each domain, its DKIM key records, an SPF record and a
// DMARC record to start with, in that order; domains in the order of keys.
func Records(keys []Key, opts RecordOptions) []Record {
	var domains []string
	byDomain := map[string][]Key{}
	if opts.Domain != "" {
		domains = append(domains, normDomain(opts.Domain))
	}
	for _, k := range keys {
		d := normDomain(k.Domain)
		if opts.Domain != "" && d != domains[0] {
			continue
		}
		if opts.Domain == "" && len(byDomain[d]) == 0 {
			domains = append(domains, d)
		}
		byDomain[d] = append(byDomain[d], k)
	}
	var out []Record
	for _, d := range domains {
		for _, k := range byDomain[d] {
			out = append(out, dkimRecord(k))
		}
		out = append(out, spfRecord(d, opts), dmarcRecord(d, opts))
	}
	return out
}

func dkimRecord(k Key) Record {
	algo := k.Algorithm()
	std := "rsa-sha256, RFC 6376"
	if algo == AlgoEd25519 {
		std = "ed25519-sha256, RFC 8463; receivers that do not know Ed25519 yet ignore it and check the RSA signature"
	}
	return Record{
		Kind:  KindDKIM,
		Name:  k.RecordName(),
		Type:  "TXT",
		Value: k.RecordValue(),
		Purpose: fmt.Sprintf("DKIM public key, selector %s (%s): receivers verify the signature mailgate puts on mail it delivers directly; "+
			"DMARC passes through it when the From domain is %s", k.Selector, std, normDomain(k.Domain)),
	}
}

func spfRecord(domain string, opts RecordOptions) Record {
	terms := []string{"v=spf1"}
	var who []string
	if opts.IncludeGoogle {
		terms = append(terms, "include:_spf.google.com")
		who = append(who, "Gmail's servers (mail sent via Gmail)")
	}
	switch {
	case opts.EgressIP != "":
		ip, err := netip.ParseAddr(opts.EgressIP)
		mech := "ip4:"
		if err == nil && ip.Is6() && !ip.Is4In6() {
			mech = "ip6:"
		}
		if err == nil {
			ip = ip.Unmap()
			terms = append(terms, mech+ip.String())
		} else {
			terms = append(terms, mech+opts.EgressIP)
		}
		who = append(who, "the relay's egress address "+opts.EgressIP+" (direct delivery)")
	case opts.EgressHostname != "":
		terms = append(terms, "a:"+normDomain(opts.EgressHostname))
		who = append(who, "the addresses of "+normDomain(opts.EgressHostname)+" (direct delivery)")
	}
	terms = append(terms, "~all")
	purpose := "SPF (RFC 7208) for the envelope sender domain " + domain
	if len(who) > 0 {
		purpose += ": authorizes " + strings.Join(who, " and ")
	}
	purpose += "; ~all soft-fails other hosts. A domain may publish only one v=spf1 record (RFC 7208 section 3.2): merge these terms into an existing one"
	if opts.EgressIP == "" && opts.EgressHostname == "" {
		purpose += ". No egress address is configured (dkim.egress_ip or dkim.egress_hostname), so direct delivery passes DMARC by DKIM alone"
	}
	return Record{Kind: KindSPF, Name: domain, Type: "TXT", Value: strings.Join(terms, " "), Purpose: purpose}
}

func dmarcRecord(domain string, opts RecordOptions) Record {
	value := "v=DMARC1; p=none"
	purpose := "DMARC (RFC 7489) policy to start with: p=none asks receivers for reports without acting on failures"
	if rua := strings.TrimPrefix(opts.DMARCRUA, "mailto:"); rua != "" {
		value += "; rua=mailto:" + rua
		purpose += ", sent to " + rua
		if at := strings.LastIndexByte(rua, '@'); at >= 0 {
			if rd := normDomain(rua[at+1:]); rd != domain && !strings.HasSuffix(domain, "."+rd) {
				// RFC 7489 section 7.1: reports go to another domain only
				// if it agrees to take them.
				purpose += fmt.Sprintf(" (%s must publish %s._report._dmarc.%s TXT \"v=DMARC1\" to accept them)", rd, domain, rd)
			}
		}
	} else {
		purpose += " (set dkim.dmarc_rua to receive the aggregate reports)"
	}
	purpose += ". Once the reports show Gmail and the relay passing for a few weeks, move to p=quarantine, then p=reject"
	return Record{Kind: KindDMARC, Name: "_dmarc." + domain, Type: "TXT", Value: value, Purpose: purpose}
}
