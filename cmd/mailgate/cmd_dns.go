package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/dkim"
)

func dnsCommand() *cli.Command {
	domainFlag := &cli.StringFlag{Name: "domain", Usage: "only the records of `DOMAIN` (it may have no DKIM key: SPF and DMARC then); default: every domain in dkim.keys"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "machine-readable JSON output"}
	return &cli.Command{
		Name:  "dns",
		Usage: "the DNS records (DKIM, SPF, DMARC) that let receivers trust the mail mailgate sends",
		Subcommands: []*cli.Command{
			{
				Name:  "records",
				Usage: "print the records to publish, built from the configuration, ready to paste",
				Flags: []cli.Flag{domainFlag, jsonFlag},
				Action: func(c *cli.Context) error {
					recs, err := dnsRecords(c)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c.App.Writer, recs)
					}
					for i, r := range recs {
						if i > 0 {
							fmt.Fprintln(c.App.Writer)
						}
						fmt.Fprintf(c.App.Writer, "# %s\n", r.Purpose)
						printRecord(c.App.Writer, r, "")
					}
					return nil
				},
			},
			{
				Name:  "check",
				Usage: "look the records up and report OK, MISSING or MISMATCH with the difference; exit status 1 unless all are OK",
				Flags: []cli.Flag{domainFlag, jsonFlag,
					&cli.StringFlag{Name: "resolver", Usage: "ask the DNS server at `HOST:PORT` (port 53 if omitted) instead of the system resolver"},
					&cli.DurationFlag{Name: "timeout", Value: 20 * time.Second, Usage: "give up on the lookups after `DURATION`"},
				},
				Action: dnsCheck,
			},
		},
	}
}

// dnsRecords builds the records for the configured keys and egress.
func dnsRecords(c *cli.Context) ([]dkim.Record, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, err
	}
	keys, err := loadDKIMKeys(cfg)
	if err != nil {
		return nil, cli.Exit(err, exitConfig)
	}
	recs := dkim.Records(keys, recordOptions(cfg, c.String("domain")))
	if len(recs) == 0 {
		return nil, fmt.Errorf("no domain to describe: add a key (mailgate dkim keygen, then dkim.keys) or pass --domain")
	}
	if d := c.String("domain"); d != "" && !hasRecordKind(recs, dkim.KindDKIM) {
		fmt.Fprintf(c.App.ErrWriter, "note: no DKIM key is configured for %s: mail From it can leave directly only unsigned, which fails DMARC; run mailgate dkim keygen --domain %s\n", d, d)
	}
	return recs, nil
}

func hasRecordKind(recs []dkim.Record, kind string) bool {
	for _, r := range recs {
		if r.Kind == kind {
			return true
		}
	}
	return false
}

// newResolver is the system resolver, or one that sends every query to addr.
func newResolver(addr string) (dkim.Resolver, error) {
	if addr == "" {
		return net.DefaultResolver, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "53")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--resolver %q: want HOST:PORT", addr)
	}
	return &net.Resolver{
		PreferGo: true, // the cgo resolver would ignore Dial
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, nil
}

// printFallbackWarnings adds, when Redis answers, the accounts whose
// fallback cannot pass DMARC with the keys configured.
func printFallbackWarnings(c *cli.Context) {
	cfg, err := loadConfig(c)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	acc, rdb, err := openAccounts(ctx, cfg, false)
	if err != nil {
		return
	}
	defer rdb.Close()
	all, err := acc.List(ctx)
	if err != nil {
		return
	}
	keys, _ := loadDKIMKeys(cfg)
	canSign := func(domain string) bool {
		for _, k := range keys {
			if strings.EqualFold(k.Domain, domain) {
				return true
			}
		}
		return false
	}
	for _, w := range fallbackWarnings(all, canSign, cfg.Relay.RewriteFromAddress) {
		fmt.Fprintf(c.App.Writer, "WARNING   fallback  %s\n", w)
	}
}

func dnsCheck(c *cli.Context) error {
	recs, err := dnsRecords(c)
	if err != nil {
		return err
	}
	r, err := newResolver(c.String("resolver"))
	if err != nil {
		return cli.Exit(err, exitConfig)
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	results := dkim.Check(ctx, r, recs)
	bad := 0
	for _, res := range results {
		if res.Status != dkim.StatusOK {
			bad++
		}
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, results); err != nil {
			return err
		}
	} else {
		printResults(c.App.Writer, results)
		printFallbackWarnings(c)
	}
	if bad > 0 {
		return cli.Exit(fmt.Sprintf("dns check: %d of %d records are not as expected", bad, len(results)), 1)
	}
	return nil
}

func printResults(w io.Writer, results []dkim.Result) {
	const pad = "            "
	for _, r := range results {
		fmt.Fprintf(w, "%-9s %-5s %s\n", strings.ToUpper(r.Status), strings.ToUpper(r.Kind), r.Name)
		if r.Status == dkim.StatusOK {
			continue
		}
		for _, f := range r.Found {
			fmt.Fprintf(w, "%sfound:    %s\n", pad, f)
		}
		fmt.Fprintf(w, "%sproblem:  %s\n", pad, r.Diff)
		if r.Status != dkim.StatusError {
			fmt.Fprintf(w, "%sexpected: %s\n", pad, r.Value)
		}
	}
}
