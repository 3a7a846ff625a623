package dkim_test

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/dkim"
)

// BenchmarkSign signs a 10 KB notification, as the relay does for each
// message it sends directly, with each algorithm. Ed25519 should cost a
// fraction of RSA-2048: the rest (hashing the body and header) is the same.
func BenchmarkSign(b *testing.B) {
	body := strings.Repeat(strings.Repeat("All work and no play makes Jack a dull boy. ", 2)[:76]+"\r\n", 10<<10/78)
	msg := []byte(strings.SplitAfter(notification, "\r\n\r\n")[0] + body)
	for _, algo := range []string{dkim.AlgoRSA, dkim.AlgoEd25519} {
		b.Run(algo, func(b *testing.B) {
			key, err := dkim.Generate(algo, 0)
			if err != nil {
				b.Fatal(err)
			}
			s, err := dkim.NewSigner([]dkim.Key{{Domain: "example.com", Selector: "bench", Signer: key}})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
