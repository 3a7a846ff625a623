package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/dkim"
)

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "DKIM signing keys for the mail the relay delivers directly",
		Subcommands: []*cli.Command{{
			Name:  "keygen",
			Usage: "generate a signing key (mode 0600) and print its DNS record and configuration entry",
			Description: "Writes a new private key and prints the TXT record to publish and the entry to add under\n" +
				"dkim.keys. For dual signing (RFC 8463) run it twice for a domain: --algo rsa and --algo\n" +
				"ed25519, with two selectors. An existing file is never overwritten.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "domain", Required: true, Usage: "signing `DOMAIN`: the From domain of the mail to sign"},
				&cli.StringFlag{Name: "selector", Required: true, Usage: "`SELECTOR`; the key is published at SELECTOR._domainkey.DOMAIN"},
				&cli.StringFlag{Name: "algo", Value: dkim.AlgoRSA, Usage: "key algorithm: rsa or ed25519"},
				&cli.IntFlag{Name: "bits", Value: dkim.DefaultRSABits, Usage: "RSA key size (1024 to 4096)"},
				&cli.StringFlag{Name: "out", DefaultText: "SELECTOR._domainkey.DOMAIN.pem in the current directory", Usage: "write the private key to `FILE`"},
			},
			Action: dkimKeygen,
		}},
	}
}

// dnsName is one or more DNS labels of letters, digits and hyphens, the
// syntax of both a domain and a selector (RFC 6376 section 3.1).
var dnsName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func dkimKeygen(c *cli.Context) error {
	domain := strings.ToLower(strings.TrimSuffix(c.String("domain"), "."))
	selector := c.String("selector")
	algo := c.String("algo")
	if !dnsName.MatchString(domain) || !strings.Contains(domain, ".") {
		return fmt.Errorf("--domain %q is not a domain name", c.String("domain"))
	}
	if !dnsName.MatchString(selector) {
		return fmt.Errorf("--selector %q: want DNS labels (letters, digits, hyphens), e.g. mg2026", selector)
	}
	bits := 0
	if algo == dkim.AlgoRSA {
		bits = c.Int("bits")
	} else if c.IsSet("bits") {
		return fmt.Errorf("--bits applies to --algo rsa only: %s keys have a fixed size", algo)
	}
	key, err := dkim.Generate(algo, bits)
	if err != nil {
		return err
	}
	out := c.String("out")
	if out == "" {
		out = selector + "._domainkey." + domain + ".pem"
	}
	// The daemon may run from another directory: the config gets a full path.
	if abs, err := filepath.Abs(out); err == nil {
		out = abs
	}
	if err := dkim.WriteKey(out, key); err != nil {
		return err
	}

	k := dkim.Key{Domain: domain, Selector: selector, Signer: key}
	rec := dkim.Record{Name: k.RecordName(), Type: "TXT", Value: k.RecordValue()}
	size := "ed25519"
	if algo == dkim.AlgoRSA {
		size = fmt.Sprintf("rsa %d-bit", bits)
	}
	snippet, err := keyYAML(config.DKIMKey{Domain: domain, Selector: selector, Algorithm: algo, PrivateKeyFile: out})
	if err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Wrote the %s private key to %s (mode 0600). Keep it secret and back it up.\n\n", size, out)
	fmt.Fprintf(w, "1. Publish this DNS TXT record:\n\n")
	printRecord(w, rec, "   ")
	fmt.Fprintf(w, "\n2. Add the key under dkim.keys in the configuration:\n\n%s\n", indentText(snippet, "   "))
	fmt.Fprintf(w, "3. Once the record is published, check it (and SPF and DMARC) with:\n\n   mailgate dns check --domain %s\n", domain)
	if algo == dkim.AlgoEd25519 {
		fmt.Fprintf(w, "\nNot every receiver verifies Ed25519 yet (RFC 8463): give %s an rsa key too, with another selector;\nmailgate then signs with both.\n", domain)
	}
	return nil
}

// keyYAML is the configuration entry for a key, nested as in the file.
func keyYAML(k config.DKIMKey) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	err := enc.Encode(map[string]any{"dkim": map[string]any{"keys": []config.DKIMKey{k}}})
	return b.String(), err
}
