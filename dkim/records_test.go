package dkim_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/dkim"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

func TestRecordsGolden(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	other := dkim.Key{Domain: "Example.ORG", Selector: "s1", Signer: rsaKey.Signer}
	recs := dkim.Records([]dkim.Key{rsaKey, other, edKey}, dkim.RecordOptions{
		EgressIP:      "203.0.113.7",
		IncludeGoogle: true,
		DMARCRUA:      "mailto:dmarc@example.com",
	})
	out, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "records.golden", append(out, '\n'))
}

func TestRecordsOptions(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	keys := []dkim.Key{rsaKey, edKey}
	value := func(recs []dkim.Record, kind string) string {
		for _, r := range recs {
			if r.Kind == kind {
				return r.Value
			}
		}
		return ""
	}
	for _, tc := range []struct {
		name       string
		opts       dkim.RecordOptions
		spf, dmarc string
	}{
		{"ipv6", dkim.RecordOptions{EgressIP: "2001:db8::25", IncludeGoogle: true},
			"v=spf1 include:_spf.google.com ip6:2001:db8::25 ~all", "v=DMARC1; p=none"},
		{"v4-mapped", dkim.RecordOptions{EgressIP: "::ffff:203.0.113.7"},
			"v=spf1 ip4:203.0.113.7 ~all", "v=DMARC1; p=none"},
		{"hostname", dkim.RecordOptions{EgressHostname: "relay.example.com", IncludeGoogle: true, DMARCRUA: "reports@example.com"},
			"v=spf1 include:_spf.google.com a:relay.example.com ~all", "v=DMARC1; p=none; rua=mailto:reports@example.com"},
		{"google only", dkim.RecordOptions{IncludeGoogle: true},
			"v=spf1 include:_spf.google.com ~all", "v=DMARC1; p=none"},
	} {
		recs := dkim.Records(keys, tc.opts)
		if len(recs) != 4 {
			t.Fatalf("%s: Records = %d records, want 2 DKIM, SPF, DMARC", tc.name, len(recs))
		}
		if got := value(recs, dkim.KindSPF); got != tc.spf {
			t.Errorf("%s: SPF = %q, want %q", tc.name, got, tc.spf)
		}
		if got := value(recs, dkim.KindDMARC); got != tc.dmarc {
			t.Errorf("%s: DMARC = %q, want %q", tc.name, got, tc.dmarc)
		}
	}

	// --domain for a domain without a key: SPF and DMARC only.
	recs := dkim.Records(keys, dkim.RecordOptions{Domain: "example.net", IncludeGoogle: true, DMARCRUA: "d@example.com"})
	if len(recs) != 2 || recs[0].Name != "example.net" || recs[1].Name != "_dmarc.example.net" {
		t.Errorf("Records(example.net) = %+v", recs)
	}
	// RFC 7489 section 7.1: reports to another domain need its consent.
	if !strings.Contains(recs[1].Purpose, "example.net._report._dmarc.example.com") {
		t.Errorf("DMARC purpose does not mention the external report authorization: %s", recs[1].Purpose)
	}
	if recs := dkim.Records(keys, dkim.RecordOptions{Domain: "EXAMPLE.com"}); len(recs) != 4 {
		t.Errorf("Records(EXAMPLE.com) = %d records, want 4", len(recs))
	}
}
