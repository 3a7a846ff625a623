package dkim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Resolver looks up TXT records; *net.Resolver satisfies it. Check asks for
// absolute names (with the final dot) so no search domain is appended.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Check statuses.
const (
	StatusOK       = "ok"
	StatusMissing  = "missing"
	StatusMismatch = "mismatch"
	StatusError    = "error" // the lookup failed: nothing is known
)

// Result is what DNS holds for one expected record.
type Result struct {
	Record
	Status string   `json:"status"`
	Found  []string `json:"found,omitempty"` // the relevant TXT values published at Name
	Diff   string   `json:"diff,omitempty"`  // what is wrong, for anything not ok
}

// Check looks each record up and compares what is published with what is
// expected, the way a receiver would read it.
func Check(ctx context.Context, r Resolver, recs []Record) []Result {
	out := make([]Result, 0, len(recs))
	for _, rec := range recs {
		res := Result{Record: rec}
		txts, err := r.LookupTXT(ctx, rec.Name+".")
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			txts = nil
		case err != nil:
			res.Status, res.Diff = StatusError, fmt.Sprintf("lookup %s TXT: %v", rec.Name, err)
			out = append(out, res)
			continue
		}
		switch rec.Kind {
		case KindDKIM:
			checkDKIM(&res, txts)
		case KindSPF:
			checkSPF(&res, txts)
		case KindDMARC:
			checkDMARC(&res, txts)
		default:
			res.Found = txts
			if len(txts) == 0 {
				res.Status = StatusMissing
			} else if slices.Contains(txts, rec.Value) {
				res.Status = StatusOK
			} else {
				res.Status, res.Diff = StatusMismatch, "no TXT record with the expected value"
			}
		}
		if res.Status == StatusMissing {
			res.Diff = missingDiff(rec, len(txts))
		}
		out = append(out, res)
	}
	return out
}

func missingDiff(rec Record, others int) string {
	what := map[string]string{KindDKIM: "DKIM key", KindSPF: "v=spf1", KindDMARC: "v=DMARC1"}[rec.Kind]
	if what == "" || others == 0 {
		return fmt.Sprintf("no TXT record at %s", rec.Name)
	}
	return fmt.Sprintf("no %s record at %s, only %d other TXT record%s", what, rec.Name, others, map[bool]string{true: "s"}[others > 1])
}

// tags parses a tag=value list (RFC 6376 section 3.2; DMARC uses the same
// syntax). Tag names are case-sensitive; a repeated tag is an error.
func tags(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not tag=value", part)
		}
		k = strings.TrimSpace(k)
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("tag %s= appears twice", k)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m, nil
}

// stripSpace removes all whitespace: RFC 6376 allows folding whitespace
// inside the base64 of p=.
func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

func checkDKIM(res *Result, txts []string) {
	res.Found = txts
	switch len(txts) {
	case 0:
		res.Status = StatusMissing
		return
	case 1:
	default:
		res.Status = StatusMismatch
		res.Diff = fmt.Sprintf("%d TXT records at %s: a key name must hold exactly one, receivers give up on several (RFC 6376 section 3.6.2.2)", len(txts), res.Name)
		return
	}
	want, _ := tags(res.Value)
	pub := txts[0]
	mismatch := func(format string, args ...any) {
		res.Status, res.Diff = StatusMismatch, fmt.Sprintf(format, args...)
	}
	if strings.Contains(pub, `"`) {
		mismatch("the published value contains quote characters (pasted with its zone-file quotes into a web form?): receivers cannot decode the key; publish the value without quotes")
		return
	}
	got, err := tags(pub)
	if err != nil {
		mismatch("published record is not a DKIM key record: %v", err)
		return
	}
	if v, ok := got["v"]; ok && v != "DKIM1" {
		mismatch("v=%s published, DKIM1 expected", v)
		return
	}
	gotK, wantK := got["k"], want["k"]
	if gotK == "" {
		gotK = AlgoRSA // RFC 6376 section 3.6.1: k= defaults to rsa
	}
	if gotK != wantK {
		mismatch("k=%s published, %s expected", gotK, wantK)
		return
	}
	p, ok := got["p"]
	if !ok {
		mismatch("published record has no p= tag")
		return
	}
	gotP, wantP := stripSpace(p), want["p"]
	switch {
	case gotP == "":
		mismatch("published p= is empty, which revokes the key (RFC 6376 section 3.6.1)")
	case gotP == wantP:
		res.Status = StatusOK
	case strings.HasPrefix(wantP, gotP):
		mismatch("published key is truncated: p= has %d of %d characters (a value over 255 bytes must be split into several quoted strings, see the zone line of `mailgate dns records`)", len(gotP), len(wantP))
	default:
		i := 0
		for i < len(gotP) && i < len(wantP) && gotP[i] == wantP[i] {
			i++
		}
		mismatch("published key differs from character %d of p=: published p=%s, expected p=%s", i+1, snippet(gotP, i), snippet(wantP, i))
	}
}

// snippet shows s around index i, where two keys first differ: RSA keys
// share their first ~40 characters and their last few, so the ends would
// look the same.
func snippet(s string, i int) string {
	start, end := max(i-8, 0), min(i+12, len(s))
	out := s[start:end]
	if start > 0 {
		out = "..." + out
	}
	if end < len(s) {
		out += "..."
	}
	return out
}

// spfTerm splits an SPF term into its qualifier and its lower-case rest.
func spfTerm(t string) (qual byte, rest string) {
	t = strings.ToLower(t)
	if t != "" && strings.ContainsRune("+-~?", rune(t[0])) {
		return t[0], t[1:]
	}
	return '+', t
}

func isSPF(txt string) bool {
	t := strings.ToLower(strings.TrimSpace(txt))
	return t == "v=spf1" || strings.HasPrefix(t, "v=spf1 ")
}

func checkSPF(res *Result, txts []string) {
	var spf []string
	for _, t := range txts {
		if isSPF(t) {
			spf = append(spf, t)
		}
	}
	res.Found = spf
	switch len(spf) {
	case 0:
		res.Status = StatusMissing
		return
	case 1:
	default:
		res.Status = StatusMismatch
		res.Diff = fmt.Sprintf("%d v=spf1 records published: RFC 7208 section 3.2 makes that a permerror, so SPF fails for every message; merge them into one", len(spf))
		return
	}
	published := strings.Fields(spf[0])[1:]
	var problems []string
	for _, want := range strings.Fields(res.Value)[1:] {
		_, w := spfTerm(want)
		if w == "all" {
			continue // the policy for everyone else is the admin's choice...
		}
		if !spfCovers(published, w) {
			problems = append(problems, "missing "+w)
		}
	}
	redirect := ""
	for _, t := range published {
		q, rest := spfTerm(t)
		if rest == "all" && q == '+' {
			// ...except this one, which hands the domain to every host.
			problems = append(problems, "published record ends in +all, which lets every host on the internet pass SPF for the domain: use ~all")
		}
		if strings.HasPrefix(rest, "redirect=") {
			redirect = strings.TrimPrefix(rest, "redirect=")
		}
	}
	if len(problems) == 0 {
		res.Status = StatusOK
		return
	}
	res.Status, res.Diff = StatusMismatch, strings.Join(problems, "; ")
	if redirect != "" {
		res.Diff += fmt.Sprintf(" (the record redirects to %s: the terms may be published there)", redirect)
	}
}

// spfCovers reports whether a published term passes what want authorizes:
// the same mechanism with a pass qualifier, or for ip4:/ip6: a network that
// contains the address.
func spfCovers(published []string, want string) bool {
	wantIP, ipErr := netip.ParseAddr(strings.TrimPrefix(strings.TrimPrefix(want, "ip4:"), "ip6:"))
	isIP := ipErr == nil && (strings.HasPrefix(want, "ip4:") || strings.HasPrefix(want, "ip6:"))
	for _, t := range published {
		q, rest := spfTerm(t)
		if q != '+' {
			continue // -, ~ and ? do not authorize
		}
		if rest == want {
			return true
		}
		if !isIP || (!strings.HasPrefix(rest, "ip4:") && !strings.HasPrefix(rest, "ip6:")) {
			continue
		}
		spec := rest[4:]
		if !strings.Contains(spec, "/") {
			if ip, err := netip.ParseAddr(spec); err == nil && ip == wantIP {
				return true
			}
			continue
		}
		if pfx, err := netip.ParsePrefix(spec); err == nil && pfx.Contains(wantIP) {
			return true
		}
	}
	return false
}

func checkDMARC(res *Result, txts []string) {
	var dmarc []string
	misplacedV := false
	for _, t := range txts {
		t = strings.TrimSpace(t)
		if strings.HasPrefix(t, "v=DMARC1") {
			dmarc = append(dmarc, t)
		} else if strings.Contains(t, "v=DMARC1") {
			misplacedV = true
			dmarc = append(dmarc, t)
		}
	}
	res.Found = dmarc
	switch {
	case len(dmarc) == 0:
		res.Status = StatusMissing
		return
	case len(dmarc) > 1:
		res.Status = StatusMismatch
		res.Diff = fmt.Sprintf("%d DMARC records published: receivers then apply no policy at all (RFC 7489 section 6.6.3); keep one", len(dmarc))
		return
	case misplacedV:
		res.Status = StatusMismatch
		res.Diff = "v=DMARC1 must be the first tag (RFC 7489 section 6.4): receivers ignore this record"
		return
	}
	got, err := tags(dmarc[0])
	if err != nil {
		res.Status, res.Diff = StatusMismatch, "published record is not a DMARC record: "+err.Error()
		return
	}
	switch p, ok := got["p"]; {
	case !ok:
		res.Status, res.Diff = StatusMismatch, "published record has no p= tag: receivers ignore it (RFC 7489 section 6.6.3)"
	case p != "none" && p != "quarantine" && p != "reject":
		res.Status, res.Diff = StatusMismatch, fmt.Sprintf("p=%s published: want none, quarantine or reject", p)
	default:
		res.Status = StatusOK
	}
}
