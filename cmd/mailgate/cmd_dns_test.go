package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailgate/mailgate/dkim"
)

// stubDNS is a UDP DNS server answering TXT queries from a map; any other
// name is NXDOMAIN. Enough of RFC 1035 for Go's resolver, nothing more.
type stubDNS struct {
	Addr string
	mu   sync.Mutex
	txt  map[string][]string
}

func startStubDNS(t *testing.T) *stubDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stubDNS{Addr: pc.LocalAddr().String(), txt: map[string][]string{}}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return s
}

func (s *stubDNS) set(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(values) == 0 {
		delete(s.txt, name)
		return
	}
	s.txt[name] = values
}

func (s *stubDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: labels up to the root, then type and class.
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i+1:i+1+l])))
		i += 1 + l
	}
	qEnd := i + 5
	if qEnd > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1 : i+3])
	s.mu.Lock()
	values, ok := s.txt[strings.Join(labels, ".")]
	s.mu.Unlock()

	const qr, aa, ra, nxdomain = 0x8000, 0x0400, 0x0080, 3
	flags := qr | aa | ra | binary.BigEndian.Uint16(q[2:4])&0x0100 // RD echoed
	if !ok {
		flags |= nxdomain
	}
	var answers [][]byte
	if qtype == 16 { // TXT
		for _, v := range values {
			var rdata []byte
			for _, part := range dkim.SplitTXT(v) {
				rdata = append(append(rdata, byte(len(part))), part...)
			}
			rr := []byte{0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60} // name → question, TXT, IN, TTL 60
			rr = binary.BigEndian.AppendUint16(rr, uint16(len(rdata)))
			answers = append(answers, append(rr, rdata...))
		}
	}
	resp := append([]byte{}, q[0:2]...)
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1)
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(answers)))
	resp = append(resp, 0, 0, 0, 0)
	resp = append(resp, q[12:qEnd]...)
	for _, a := range answers {
		resp = append(resp, a...)
	}
	return resp
}

// runKeygen runs mailgate dkim keygen in dir and returns the key file.
func runKeygen(t *testing.T, dir, domain, selector, algo string) (file, out string) {
	t.Helper()
	file = filepath.Join(dir, selector+".pem")
	code, out, stderr := mailgate(t, "dkim", "keygen", "--domain", domain, "--selector", selector, "--algo", algo, "--out", file)
	if code != 0 {
		t.Fatalf("dkim keygen %s = %d\n%s%s", algo, code, out, stderr)
	}
	return file, out
}

func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	code, out, stderr := mailgate(t, "dkim", "keygen", "--domain", "Example.com", "--selector", "mg2026")
	if code != 0 {
		t.Fatalf("keygen = %d\n%s%s", code, out, stderr)
	}
	file := filepath.Join(dir, "mg2026._domainkey.example.com.pem")
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v, mode %v; want 0600", file, err, st.Mode())
	}
	wantOutput(t, "keygen output", out,
		"rsa 2048-bit private key to "+file+" (mode 0600)",
		"   Name:  mg2026._domainkey.example.com\n   Type:  TXT\n   Value: v=DKIM1; k=rsa; p=MIIBIjAN",
		`   Zone:  mg2026._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=MIIB`,
		"mailgate dns check --domain example.com",
	)
	// The printed configuration entry is a working configuration.
	start, end := strings.Index(out, "   dkim:\n"), strings.Index(out, "\n3. ")
	if start < 0 || end < start {
		t.Fatalf("no YAML snippet in:\n%s", out)
	}
	snippet := strings.ReplaceAll(out[start:end], "\n   ", "\n")[3:]
	wantSnippet := "dkim:\n  keys:\n    - domain: example.com\n      selector: mg2026\n      algorithm: rsa\n      private_key_file: " + file + "\n"
	if snippet != wantSnippet {
		t.Errorf("YAML snippet =\n%s\nwant\n%s", snippet, wantSnippet)
	}
	cfg := filepath.Join(dir, "mailgate.yaml")
	os.WriteFile(cfg, []byte(snippet), 0o600)
	code, recs, stderr := mailgate(t, "--config", cfg, "dns", "records")
	if code != 0 || !strings.Contains(recs, "Name:  mg2026._domainkey.example.com") {
		t.Errorf("dns records with the printed snippet = %d\n%s%s", code, recs, stderr)
	}
	if !strings.Contains(recs, out[strings.Index(out, "v=DKIM1"):strings.Index(out, "\n   Zone")]) {
		t.Errorf("dns records prints another DKIM value than keygen did:\n%s", recs)
	}

	// Never overwrite a key whose public half may be published.
	before, _ := os.ReadFile(file)
	code, _, stderr = mailgate(t, "dkim", "keygen", "--domain", "example.com", "--selector", "mg2026")
	if after, _ := os.ReadFile(file); code == 0 || !strings.Contains(stderr, "already exists") || !bytes.Equal(before, after) {
		t.Errorf("second keygen = %d %q; the key must stay as it was", code, stderr)
	}

	_, out = runKeygen(t, dir, "example.com", "ed1", "ed25519")
	if !strings.Contains(out, "Value: v=DKIM1; k=ed25519; p=") || !strings.Contains(out, "give example.com an rsa key too") {
		t.Errorf("ed25519 keygen output:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--domain", "example.com", "--selector", "x", "--algo", "ed25519", "--bits", "2048"}, "--bits applies to --algo rsa only"},
		{[]string{"--domain", "example.com", "--selector", "x", "--bits", "512"}, "512 bits"},
		{[]string{"--domain", "example.com", "--selector", "x", "--algo", "dsa"}, `"dsa"`},
		{[]string{"--domain", "exa mple.com", "--selector", "x"}, "not a domain name"},
		{[]string{"--domain", "example.com", "--selector", "a_b"}, "--selector"},
		{[]string{"--selector", "x"}, "domain"},
	} {
		code, _, stderr := mailgate(t, append([]string{"dkim", "keygen"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("keygen %v = %d %q, want an error with %q", tc.args, code, stderr, tc.want)
		}
	}
}

// dnsEnv is a configuration with an RSA and an Ed25519 key for example.com.
func dnsEnv(t *testing.T) (cfg string) {
	t.Helper()
	dir := t.TempDir()
	rsaFile, _ := runKeygen(t, dir, "example.com", "rsa1", "rsa")
	edFile, _ := runKeygen(t, dir, "example.com", "ed1", "ed25519")
	cfg = filepath.Join(dir, "mailgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`dkim:
  egress_ip: 203.0.113.7
  dmarc_rua: dmarc@example.com
  keys:
    - {domain: example.com, selector: rsa1, algorithm: rsa, private_key_file: %s}
    - {domain: example.com, selector: ed1, algorithm: ed25519, private_key_file: %s}
`, rsaFile, edFile)), 0o600)
	return cfg
}

func TestDNSRecords(t *testing.T) {
	cfg := dnsEnv(t)
	code, out, stderr := mailgate(t, "--config", cfg, "dns", "records")
	if code != 0 {
		t.Fatalf("dns records = %d\n%s", code, stderr)
	}
	wantOutput(t, "dns records", out,
		"Name:  rsa1._domainkey.example.com\n",
		"Name:  ed1._domainkey.example.com\n",
		"Name:  example.com\nType:  TXT\nValue: v=spf1 include:_spf.google.com ip4:203.0.113.7 ~all\n",
		"Name:  _dmarc.example.com\nType:  TXT\nValue: v=DMARC1; p=none; rua=mailto:dmarc@example.com\n",
		"move to p=quarantine",
		`Zone:  rsa1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=`,
	)

	code, out, _ = mailgate(t, "--config", cfg, "dns", "records", "--json")
	var recs []dkim.Record
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs) != 4 {
		t.Fatalf("dns records --json = %d, %v, %d records:\n%s", code, err, len(recs), out)
	}

	// A domain without a key gets SPF and DMARC, and a note why that is not enough.
	code, out, stderr = mailgate(t, "--config", cfg, "dns", "records", "--domain", "example.net", "--json")
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs) != 2 || !strings.Contains(stderr, "no DKIM key is configured for example.net") {
		t.Errorf("dns records --domain example.net = %d %v %d records, stderr %q", code, err, len(recs), stderr)
	}

	// A key file others can read stops the command, naming the file.
	rsaFile := filepath.Join(filepath.Dir(cfg), "rsa1.pem")
	os.Chmod(rsaFile, 0o644)
	code, _, stderr = mailgate(t, "--config", cfg, "dns", "records")
	if code != exitConfig || !strings.Contains(stderr, "dkim.keys[0]: dkim key "+rsaFile+" is readable by others (mode 0644): chmod 600 it") {
		t.Errorf("dns records with a 0644 key = %d %q", code, stderr)
	}

	code, _, stderr = mailgate(t, "dns", "records")
	if code == 0 || !strings.Contains(stderr, "no domain") {
		t.Errorf("dns records without keys = %d %q", code, stderr)
	}
}

func TestDNSCheck(t *testing.T) {
	cfg := dnsEnv(t)
	_, out, _ := mailgate(t, "--config", cfg, "dns", "records", "--json")
	var recs []dkim.Record
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatal(err)
	}
	dns := startStubDNS(t)
	for _, r := range recs {
		dns.set(r.Name, r.Value)
	}
	dns.set("example.com", "google-site-verification=abc", "v=spf1 include:_spf.google.com ip4:203.0.113.0/24 -all")
	check := func(args ...string) (int, string, string) {
		return mailgate(t, append([]string{"--config", cfg, "dns", "check", "--resolver", dns.Addr, "--timeout", "5s"}, args...)...)
	}

	code, out, stderr := check()
	if code != 0 || strings.Count(out, "OK ") != 4 {
		t.Fatalf("dns check of a correct zone = %d\n%s%s", code, out, stderr)
	}

	// The admin forgot the egress address in SPF and has not published DMARC.
	dns.set("example.com", "v=spf1 include:_spf.google.com ~all")
	dns.set("_dmarc.example.com")
	code, out, stderr = check()
	for _, want := range []string{
		"OK        DKIM  rsa1._domainkey.example.com\n",
		"OK        DKIM  ed1._domainkey.example.com\n",
		"MISMATCH  SPF   example.com\n" +
			"            found:    v=spf1 include:_spf.google.com ~all\n" +
			"            problem:  missing ip4:203.0.113.7\n" +
			"            expected: v=spf1 include:_spf.google.com ip4:203.0.113.7 ~all\n",
		"MISSING   DMARC _dmarc.example.com\n" +
			"            problem:  no TXT record at _dmarc.example.com\n" +
			"            expected: v=DMARC1; p=none; rua=mailto:dmarc@example.com\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dns check output lacks\n%s\ngot:\n%s", want, out)
		}
	}
	if code != 1 || !strings.Contains(stderr, "2 of 4 records are not as expected") {
		t.Errorf("dns check with problems = exit %d, %q; want 1", code, stderr)
	}

	code, out, _ = check("--json", "--domain", "example.com")
	var results []dkim.Result
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 1 || len(results) != 4 {
		t.Fatalf("dns check --json = %d %v:\n%s", code, err, out)
	}
	if r := results[2]; r.Status != dkim.StatusMismatch || r.Diff != "missing ip4:203.0.113.7" {
		t.Errorf("SPF result = %+v", r)
	}

	// A resolver that does not answer is an error, not a missing record.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer dead.Close()
	code, out, _ = mailgate(t, "--config", cfg, "dns", "check", "--resolver", dead.LocalAddr().String(), "--timeout", "1s", "--domain", "example.com")
	if code != 1 || strings.Count(out, "ERROR") != 4 {
		t.Errorf("dns check against a silent resolver = %d\n%s", code, out)
	}
}
