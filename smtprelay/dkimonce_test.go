package smtprelay

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/dkim"
)

// countingSigner is package dkim's signer, counting the messages it signs.
type countingSigner struct {
	*dkim.Signer
	n atomic.Int64
}

func (c *countingSigner) Sign(raw []byte) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(raw)
}

// TestSignedOnceAcrossTries: a message that a first direct try could not
// deliver (451) is signed at that try only; the retry sends the same
// signatures, which still verify (RSA and Ed25519).
func TestSignedOnceAcrossTries(t *testing.T) {
	w := newRelayWorld(t, 500)
	signer := &countingSigner{Signer: w.relay.opts.Signer.(*dkim.Signer)}
	w.relay.opts.Signer = signer
	w.mx.FailData(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	m := w.queueAndTry(wsAcct, withPDF(wsAcct))
	if m.State != StateDeferred || m.DKIM == nil {
		t.Fatalf("after a 451: %+v, want deferred with its signature kept", m)
	}
	w.clock.t = m.NextAttempt.Add(time.Second)
	if n, _ := w.q.Promote(context.Background()); n != 1 {
		t.Fatalf("promoted %d, want 1", n)
	}
	w.tryNext()
	got := w.mx.Received()
	if len(got) != 1 {
		t.Fatalf("MX received %d messages, want 1", len(got))
	}
	if n := signer.n.Load(); n != 1 {
		t.Errorf("signed %d times over two tries, want once", n)
	}
	if !strings.HasPrefix(string(got[0].Data), m.DKIM.Fields) {
		t.Errorf("the retry's signature is not the one made at the first try")
	}
	verifs, err := msgdkim.VerifyWithOptions(bytes.NewReader(got[0].Data), &msgdkim.VerifyOptions{LookupTXT: w.lookupTXT})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 2 {
		t.Fatalf("%d signatures, want RSA and Ed25519", len(verifs))
	}
	for _, v := range verifs {
		if v.Err != nil {
			t.Errorf("signature by %s does not verify on the retry: %v", v.Domain, v.Err)
		}
	}
}

// TestChangedBytesSignedAgain: a saved signature is for the bytes it
// signed; other bytes (a From rewritten, say) are signed anew.
func TestChangedBytesSignedAgain(t *testing.T) {
	w := newRelayWorld(t, 500)
	signer := &countingSigner{Signer: w.relay.opts.Signer.(*dkim.Signer)}
	w.relay.opts.Signer = signer
	m := &Message{ID: "x"}
	a := []byte(notif(wsAcct, "one"))
	b := []byte(notif(wsAcct, "two"))
	sa, err := w.relay.sign(m, a, "acme.example")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := w.relay.sign(m, a, "acme.example"); !bytes.Equal(again, sa) || signer.n.Load() != 1 {
		t.Errorf("same bytes: signed %d times, want the saved signature reused", signer.n.Load())
	}
	sb, _ := w.relay.sign(m, b, "acme.example")
	if signer.n.Load() != 2 || !bytes.HasSuffix(sb, b) {
		t.Errorf("other bytes: signed %d times in all, want a new signature", signer.n.Load())
	}
	for _, msg := range [][]byte{sa, sb} {
		vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: w.lookupTXT})
		if err != nil || len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
			t.Errorf("verify = %v, %v", vs, err)
		}
	}
}
