package dkim_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/dkim"
)

// zone is a stub Resolver: TXT values by name, NXDOMAIN for the rest.
type zone map[string][]string

func (z zone) LookupTXT(_ context.Context, name string) ([]string, error) {
	if !strings.HasSuffix(name, ".") {
		return nil, errors.New("Check asked for a relative name: " + name)
	}
	name = strings.TrimSuffix(name, ".")
	if name == "servfail.example.com" || name == "_dmarc.servfail.example.com" {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if v, ok := z[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// published is a zone holding exactly the records, as a careful admin
// publishes them, beside the TXT records a domain usually has.
func published(recs []dkim.Record) zone {
	z := zone{}
	for _, r := range recs {
		z[r.Name] = append(z[r.Name], r.Value)
	}
	z["example.com"] = append(z["example.com"], "google-site-verification=abc123")
	return z
}

func TestCheck(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	other, err := dkim.Generate("rsa", 1024)
	if err != nil {
		t.Fatal(err)
	}
	otherValue := dkim.Key{Domain: "example.com", Selector: "x", Signer: other}.RecordValue()
	recs := dkim.Records([]dkim.Key{rsaKey, edKey}, dkim.RecordOptions{
		EgressIP: "203.0.113.7", IncludeGoogle: true, DMARCRUA: "dmarc@example.com",
	})
	rsaName, edName := rsaKey.RecordName(), edKey.RecordName()
	rsaValue := rsaKey.RecordValue()
	rsaP := rsaValue[strings.Index(rsaValue, "p=")+2:]

	type want struct{ status, diff string }
	for _, tc := range []struct {
		name   string
		change func(z zone)
		want   map[string]want // by record name; the rest must be ok
	}{
		{"all ok", func(zone) {}, nil},
		{"ok despite tag order, spacing and extra terms", func(z zone) {
			// Tag order and whitespace inside p= do not matter (RFC 6376 section 3.2).
			z[rsaName] = []string{"p=" + rsaP[:100] + " " + rsaP[100:] + " ; k=rsa;v=DKIM1;t=s"}
			z["example.com"] = []string{"v=spf1 mx ip4:203.0.113.0/24 include:_spf.google.com -all"}
			z["_dmarc.example.com"] = []string{"v=DMARC1; p=reject; rua=mailto:other@example.org"}
		}, nil},
		{"everything missing", func(z zone) { clear(z) }, map[string]want{
			rsaName: {"missing", "no TXT record at " + rsaName}, edName: {"missing", ""},
			"example.com": {"missing", "no TXT record at example.com"}, "_dmarc.example.com": {"missing", ""},
		}},
		{"mismatched DKIM key", func(z zone) { z[rsaName] = []string{otherValue} }, map[string]want{
			rsaName: {"mismatch", "published key differs from character"},
		}},
		{"truncated DKIM key", func(z zone) { z[rsaName] = []string{rsaValue[:255]} }, map[string]want{
			rsaName: {"mismatch", "published key is truncated: p= has 237 of 392 characters"},
		}},
		{"DKIM key type", func(z zone) { z[edName] = []string{rsaValue} }, map[string]want{
			edName: {"mismatch", "k=rsa published, ed25519 expected"},
		}},
		{"DKIM key pasted with quotes", func(z zone) { z[rsaName] = []string{dkim.QuoteTXT(rsaValue)} }, map[string]want{
			rsaName: {"mismatch", "quote characters"},
		}},
		{"DKIM key revoked", func(z zone) { z[edName] = []string{"v=DKIM1; k=ed25519; p="} }, map[string]want{
			edName: {"mismatch", "revokes the key"},
		}},
		{"two DKIM records", func(z zone) { z[rsaName] = append(z[rsaName], otherValue) }, map[string]want{
			rsaName: {"mismatch", "2 TXT records"},
		}},
		{"SPF missing include", func(z zone) {
			z["example.com"] = []string{"v=spf1 ip4:203.0.113.7 ~all", "google-site-verification=abc123"}
		}, map[string]want{
			"example.com": {"mismatch", "missing include:_spf.google.com"},
		}},
		{"SPF missing both", func(z zone) { z["example.com"] = []string{"v=spf1 mx ~ip4:203.0.113.7 -all"} }, map[string]want{
			"example.com": {"mismatch", "missing include:_spf.google.com; missing ip4:203.0.113.7"},
		}},
		{"SPF +all", func(z zone) {
			z["example.com"] = []string{"v=spf1 include:_spf.google.com ip4:203.0.113.7 +all"}
		}, map[string]want{
			"example.com": {"mismatch", "+all"},
		}},
		{"two SPF records", func(z zone) {
			z["example.com"] = []string{"v=spf1 include:_spf.google.com ~all", "v=spf1 ip4:203.0.113.7 ~all"}
		}, map[string]want{
			"example.com": {"mismatch", "2 v=spf1 records published: RFC 7208 section 3.2"},
		}},
		{"DMARC missing", func(z zone) { delete(z, "_dmarc.example.com") }, map[string]want{
			"_dmarc.example.com": {"missing", "no TXT record at _dmarc.example.com"},
		}},
		{"SPF missing among other TXT", func(z zone) { z["example.com"] = []string{"google-site-verification=abc123"} }, map[string]want{
			"example.com": {"missing", "no v=spf1 record at example.com, only 1 other TXT record"},
		}},
		{"DMARC without p", func(z zone) { z["_dmarc.example.com"] = []string{"v=DMARC1; rua=mailto:d@example.com"} }, map[string]want{
			"_dmarc.example.com": {"mismatch", "no p= tag"},
		}},
		{"DMARC v not first", func(z zone) { z["_dmarc.example.com"] = []string{"p=none; v=DMARC1"} }, map[string]want{
			"_dmarc.example.com": {"mismatch", "must be the first tag"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := published(recs)
			tc.change(z)
			results := dkim.Check(context.Background(), z, recs)
			if len(results) != len(recs) {
				t.Fatalf("Check = %d results for %d records", len(results), len(recs))
			}
			for _, r := range results {
				w, ok := tc.want[r.Name]
				if !ok {
					w = want{"ok", ""}
				}
				if r.Status != w.status || !strings.Contains(r.Diff, w.diff) || (w.status == "ok") != (r.Diff == "") {
					t.Errorf("%s: %s %q, want %s %q (found %q)", r.Name, r.Status, r.Diff, w.status, w.diff, r.Found)
				}
			}
		})
	}
}

func TestCheckFoundAndErrors(t *testing.T) {
	recs := dkim.Records(nil, dkim.RecordOptions{Domain: "servfail.example.com", IncludeGoogle: true})
	for _, r := range dkim.Check(context.Background(), zone{}, recs) {
		if r.Status != dkim.StatusError || !strings.Contains(r.Diff, "server misbehaving") {
			t.Errorf("%s on SERVFAIL = %s %q, want error", r.Name, r.Status, r.Diff)
		}
	}
	// SPF reports only the v=spf1 records among the domain's TXT records.
	recs = dkim.Records(nil, dkim.RecordOptions{Domain: "example.com", IncludeGoogle: true})
	z := zone{"example.com": {"google-site-verification=abc", "v=spf1 include:_spf.google.com ~all"}}
	r := dkim.Check(context.Background(), z, recs)[0]
	if r.Status != dkim.StatusOK || len(r.Found) != 1 || r.Found[0] != "v=spf1 include:_spf.google.com ~all" {
		t.Errorf("SPF check = %+v", r)
	}
}

// FuzzCheck feeds arbitrary published values to the comparisons, which must
// not panic and must explain anything that is not ok.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"v=DKIM1; k=rsa; p=", "p=;;;=", "v=spf1 ip4:1.2.3.4/99 +all", "v=DMARC1; p", "v=DMARC1; p=none; p=none", "\"\""} {
		f.Add(s)
	}
	recs := dkim.Records([]dkim.Key{{Domain: "example.com", Selector: "s", Signer: mustEd25519(f).Signer}},
		dkim.RecordOptions{EgressIP: "2001:db8::1", IncludeGoogle: true})
	f.Fuzz(func(t *testing.T, v string) {
		z := zone{}
		for _, r := range recs {
			z[r.Name] = []string{v}
		}
		for _, r := range dkim.Check(context.Background(), z, recs) {
			if r.Status != dkim.StatusOK && r.Diff == "" {
				t.Errorf("%s %s for %q without a reason", r.Name, r.Status, v)
			}
		}
	})
}

func mustEd25519(f *testing.F) dkim.Key {
	k, err := dkim.Generate("ed25519", 0)
	if err != nil {
		f.Fatal(err)
	}
	return dkim.Key{Domain: "example.com", Selector: "s", Signer: k}
}
