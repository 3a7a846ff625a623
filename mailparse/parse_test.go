package mailparse

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/golden/*.json from Parse's output")

// parsedView is the part of Parsed that golden files pin: everything but
// the header and the attachment bytes.
type parsedView struct {
	MessageID  string     `json:"message_id"`
	InReplyTo  []string   `json:"in_reply_to"`
	References []string   `json:"references"`
	Subject    string     `json:"subject"`
	From       Address    `json:"from"`
	To         []Address  `json:"to"`
	CC         []Address  `json:"cc"`
	ReplyTo    []Address  `json:"reply_to"`
	Date       string     `json:"date"`
	Text       string     `json:"text"`
	HTML       string     `json:"html"`
	Parts      []partView `json:"parts"`
	Problems   []string   `json:"problems"`
}

// partView pins a part by the digest of its bytes, as the ticket store
// describes an attachment.
type partView struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int    `json:"size"`
	SHA256      string `json:"sha256"`
	ContentID   string `json:"content_id,omitempty"`
	Inline      bool   `json:"inline"`
}

func viewOfPart(p Part) partView {
	return partView{Filename: p.Filename, ContentType: p.ContentType, Size: len(p.Data), SHA256: parseTestSHA256(p.Data),
		ContentID: p.ContentID, Inline: p.Inline}
}

func viewOf(p *Parsed) parsedView {
	v := parsedView{
		MessageID: p.MessageID, InReplyTo: p.InReplyTo, References: p.References,
		Subject: p.Subject, From: p.From, To: p.To, CC: p.CC, ReplyTo: p.ReplyTo,
		Text: p.Text, HTML: p.HTML, Problems: p.Problems,
	}
	if !p.Date.IsZero() {
		v.Date = p.Date.Format(time.RFC3339)
	}
	for _, part := range p.Parts {
		v.Parts = append(v.Parts, viewOfPart(part))
	}
	return v
}

func marshalView(t *testing.T, v parsedView) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readMail(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "mail", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func parseFile(t *testing.T, name string) *Parsed {
	t.Helper()
	return Parse(readMail(t, name))
}

// TestParseGolden compares Parse's view of every mail in testdata/mail
// with testdata/golden. Run with -update to rewrite the goldens, then read
// the diff: the golden files are the assertions.
func TestParseGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test mails: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".eml")
		t.Run(name, func(t *testing.T) {
			got := marshalView(t, viewOf(parseFile(t, filepath.Base(f))))
			golden := filepath.Join("testdata", "golden", name+".json")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestParseGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Parse(%s) differs from %s:\ngot:\n%s\nwant:\n%s", f, golden, got, want)
			}
		})
	}
}

func parseTestSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s = %q, want it to contain %q", what, s, sub)
		}
	}
}

func wantProblem(t *testing.T, p *Parsed, sub string) {
	t.Helper()
	for _, pr := range p.Problems {
		if strings.Contains(pr, sub) {
			return
		}
	}
	t.Errorf("Problems = %q, want one containing %q", p.Problems, sub)
}

func wantNoProblems(t *testing.T, p *Parsed) {
	t.Helper()
	if len(p.Problems) > 0 {
		t.Errorf("Problems = %q, want none", p.Problems)
	}
}

// The PDF and PNG used in the test mails.
const (
	pdfSHA256 = "2da20fe7323fc801b0a162aa70324b0d59e1ba282ab0e8241aafbefe7dbcaa67"
	pngSHA256 = "6b7fa434f92a8b80aab02d9bf1a12e49ffcae424e4013a1c4f68b67e3d2bbcd0"
)

func TestParsePlainASCII(t *testing.T) {
	p := parseFile(t, "plain-ascii.eml")
	wantNoProblems(t, p)
	if p.MessageID != "CAF1plain001@mail.example.com" {
		t.Errorf("MessageID = %q", p.MessageID)
	}
	if want := (Address{Name: "Alice Martin", Email: "alice.martin@example.com"}); p.From != want {
		t.Errorf("From = %+v, want %+v (email lower-cased)", p.From, want)
	}
	if want := time.Date(2024, 3, 4, 9, 15, 0, 0, time.UTC); !p.Date.Equal(want) {
		t.Errorf("Date = %v, want %v", p.Date, want)
	}
	if strings.Contains(p.Text, "\r") || !strings.HasPrefix(p.Text, "Hello,\n\nSince this morning") {
		t.Errorf("Text = %q, want LF line endings and the body", p.Text)
	}
	if got := p.Header.Get("Received"); !strings.Contains(got, "mx.google.com") {
		t.Errorf("Header Received = %q", got)
	}
}

func TestParseLatin1(t *testing.T) {
	p := parseFile(t, "french-latin1.eml")
	wantNoProblems(t, p)
	if p.Subject != "Problème de facturation" {
		t.Errorf("Subject = %q, want %q", p.Subject, "Problème de facturation")
	}
	if want := (Address{Name: "François Lefèvre", Email: "francois.lefevre@example.fr"}); p.From != want {
		t.Errorf("From = %+v, want %+v", p.From, want)
	}
	wantContains(t, "Text", p.Text, "J'ai reçu deux factures pour le même mois. Voilà le détail :",
		"où le montant a été doublé", "Ça commence à être pénible.")
}

func TestParseUTF8Base64(t *testing.T) {
	p := parseFile(t, "french-utf8.eml")
	wantNoProblems(t, p)
	if p.Subject != "Réclamation : colis non reçu" {
		t.Errorf("Subject = %q", p.Subject)
	}
	if len(p.CC) != 1 || p.CC[0].Name != "Marc Dubois" {
		t.Errorf("CC = %+v, want Marc Dubois", p.CC)
	}
	wantContains(t, "Text", p.Text, "Mon colis n°7781 n'est jamais arrivé", "« livré »", "Hélène Dubois")
}

func TestParseWindows1252(t *testing.T) {
	p := parseFile(t, "windows-1252.eml")
	wantNoProblems(t, p)
	if p.Subject != "Refund of €120 – order #5512" {
		t.Errorf("Subject = %q", p.Subject)
	}
	wantContains(t, "Text", p.Text, "charged €120 twice – see “Order #5512”", "I’d like a refund", "possible.", "…", "José Peña")
	if len(p.ReplyTo) != 1 || p.ReplyTo[0].Email != "jose.pena+billing@example.es" {
		t.Errorf("ReplyTo = %+v", p.ReplyTo)
	}
	if len(p.CC) != 2 {
		t.Errorf("CC = %+v, want 2 addresses", p.CC)
	}
}

func TestParseISO2022JP(t *testing.T) {
	p := parseFile(t, "iso-2022-jp.eml")
	wantNoProblems(t, p)
	if p.Subject != "請求書について" {
		t.Errorf("Subject = %q, want 請求書について", p.Subject)
	}
	if p.From.Name != "山田太郎" {
		t.Errorf("From.Name = %q, want 山田太郎", p.From.Name)
	}
	wantContains(t, "Text", p.Text, "いつもお世話になっております。", "先月の請求書が届いておりません。")
}

func TestParseAlternativePrefersPlain(t *testing.T) {
	p := parseFile(t, "alternative-html.eml")
	wantNoProblems(t, p)
	if !strings.HasPrefix(p.Text, "Hi team,\n\nThe export to CSV fails with \"Error 500\" when the date range is longer\nthan one year.") {
		t.Errorf("Text = %q, want the text/plain alternative", p.Text)
	}
	wantContains(t, "HTML", p.HTML, "<ol><li>Reports &gt; Export</li>")
	if len(p.Parts) != 0 {
		t.Errorf("Parts = %+v, want none", p.Parts)
	}
}

func TestParseHTMLOnly(t *testing.T) {
	p := parseFile(t, "html-only.eml")
	wantNoProblems(t, p)
	wantContains(t, "Text", p.Text,
		"Bonjour,\n\nNous n’avons pas reçu la commande n° A-2291 & la facture associée.\nPourriez-vous nous indiquer :",
		"- la date d'expédition ;\n- le numéro de suivi.",
		"Montant 1 250,00 €",
		"Merci,\nClaire")
	for _, bad := range []string{"never shown", "MsoNormal", "Order question", "<", "&nbsp;"} {
		if strings.Contains(p.Text, bad) {
			t.Errorf("Text contains %q:\n%s", bad, p.Text)
		}
	}
}

func TestParseEncodedFilenames(t *testing.T) {
	p := parseFile(t, "attachment-encoded-filename.eml")
	wantNoProblems(t, p)
	if p.Subject != "Facture et relevé" {
		t.Errorf("Subject = %q", p.Subject)
	}
	want := []struct{ name, ctype string }{
		{"Facture n°42 — été.pdf", "application/pdf"},                                                  // RFC 2231 filename*=
		{"Relevé de compte.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}, // RFC 2047 in name=
		{"Reçu de paiement.txt", "text/plain"},                                                         // RFC 2231 continuations, latin1
	}
	if len(p.Parts) != len(want) {
		t.Fatalf("Parts = %+v, want %d", p.Parts, len(want))
	}
	for i, w := range want {
		if a := viewOfPart(p.Parts[i]); a.Filename != w.name || a.ContentType != w.ctype || a.Inline {
			t.Errorf("Parts[%d] = %+v, want %q %s not inline", i, a, w.name, w.ctype)
		}
	}
	if pdf := viewOfPart(p.Parts[0]); pdf.SHA256 != pdfSHA256 || pdf.Size != 497 {
		t.Errorf("PDF = %+v, want sha256 %s, 497 bytes", pdf, pdfSHA256)
	}
	// The text/plain attachment keeps its bytes (latin1) and is not body.
	if got := string(p.Parts[2].Data); got != "Re\xe7u de paiement n\xb042\nMontant : 49,90 EUR\n" {
		t.Errorf("receipt data = %q", got)
	}
	if strings.Contains(p.Text, "Montant") {
		t.Errorf("Text = %q, must not include the text attachment", p.Text)
	}
}

func TestParseInlineImage(t *testing.T) {
	p := parseFile(t, "inline-image.eml")
	wantNoProblems(t, p)
	if len(p.Parts) != 1 {
		t.Fatalf("Parts = %+v, want the image", p.Parts)
	}
	a := viewOfPart(p.Parts[0])
	want := partView{Filename: "image001.png", ContentType: "image/png", Size: 70, SHA256: pngSHA256,
		ContentID: "image001.png@01DA7C2E.5F3A1B20", Inline: true}
	if a != want {
		t.Errorf("Parts[0] = %+v, want %+v", a, want)
	}
	if p.Text != "Here is the error I get:\n\nThanks,\nDana" {
		t.Errorf("Text = %q", p.Text)
	}
}

func TestParseNestedMultipart(t *testing.T) {
	p := parseFile(t, "nested-multipart.eml")
	wantNoProblems(t, p)
	if !strings.HasPrefix(p.Text, "Hello,\n\nThe logo on the invoice is wrong, see:\n[image: logo.png]") {
		t.Errorf("Text = %q, want the plain alternative", p.Text)
	}
	wantContains(t, "HTML", p.HTML, `<img src="cid:ii_lt5xq2k80"`)
	if len(p.Parts) != 2 {
		t.Fatalf("Parts = %+v, want logo and invoice", p.Parts)
	}
	if a := viewOfPart(p.Parts[0]); a.Filename != "logo.png" || !a.Inline || a.ContentID != "ii_lt5xq2k80" {
		t.Errorf("Parts[0] = %+v, want inline logo.png", a)
	}
	if a := viewOfPart(p.Parts[1]); a.Filename != "INV-2024-0310.pdf" || a.Inline || a.SHA256 != pdfSHA256 {
		t.Errorf("Parts[1] = %+v, want the invoice as attachment", a)
	}
	if len(p.CC) != 1 || p.CC[0] != (Address{Name: "Billing Team", Email: "billing@acme.test"}) {
		t.Errorf("CC = %+v", p.CC)
	}
}

func TestParseTruncated(t *testing.T) {
	p := parseFile(t, "truncated.eml")
	wantProblem(t, p, "closing boundary")
	wantProblem(t, p, "base64 data truncated")
	if p.Subject != "Contract for renewal" || p.MessageID != "trunc-0001@example.com" {
		t.Errorf("Subject, MessageID = %q, %q", p.Subject, p.MessageID)
	}
	if p.Text != "Please find the signed contract attached.\nFrank" {
		t.Errorf("Text = %q", p.Text)
	}
	if len(p.Parts) != 1 || p.Parts[0].Filename != "contract.pdf" || !bytes.HasPrefix(p.Parts[0].Data, []byte("%PDF-1.4")) {
		t.Errorf("Parts = %+v, want what was readable of contract.pdf", p.Parts)
	}
}

func TestParseMalformedHeaders(t *testing.T) {
	p := parseFile(t, "malformed-headers.eml")
	if p.From.Email != "bob@example.com" {
		t.Errorf("From = %+v, want bob@example.com", p.From)
	}
	if !p.Date.IsZero() {
		t.Errorf("Date = %v, want zero", p.Date)
	}
	wantProblem(t, p, "Date: cannot parse")
	wantProblem(t, p, "From:")
	wantProblem(t, p, `dropped malformed line "this line is not a header at all"`)
	// The fields after the garbage lines survive.
	if p.Subject != "Urgent: order not delivered" || p.MessageID != "malformed-0001@example.com" {
		t.Errorf("Subject, MessageID = %q, %q", p.Subject, p.MessageID)
	}
	if len(p.To) != 2 || p.To[1].Email != "sales@acme.test" {
		t.Errorf("To = %+v, want support@ and sales@", p.To)
	}
	wantContains(t, "Text", p.Text, "My order still has not arrived.")
}

func TestParseNoMessageID(t *testing.T) {
	p := parseFile(t, "no-message-id.eml")
	wantNoProblems(t, p)
	if p.MessageID != "" {
		t.Errorf("MessageID = %q, want empty", p.MessageID)
	}
}

func TestParseThreadingHeaders(t *testing.T) {
	const root = "CAF1plain001@mail.example.com"
	p := parseFile(t, "reply-in-reply-to.eml")
	if !reflect.DeepEqual(p.InReplyTo, []string{root}) || !reflect.DeepEqual(p.References, []string{root}) {
		t.Errorf("InReplyTo, References = %q, %q", p.InReplyTo, p.References)
	}
	p = parseFile(t, "reply-references.eml")
	want := []string{root, "ticket-1-comment-2@acme.test", "CAF1reply002@mail.example.com"}
	if p.InReplyTo != nil || !reflect.DeepEqual(p.References, want) {
		t.Errorf("InReplyTo, References = %q, %q, want nil, %q", p.InReplyTo, p.References, want)
	}
}

func TestParseForwardedMessage(t *testing.T) {
	p := parseFile(t, "forwarded-rfc822.eml")
	wantNoProblems(t, p)
	if p.Text != "Is this reminder legit? I paid last week." {
		t.Errorf("Text = %q, want only the outer body", p.Text)
	}
	if len(p.Parts) != 1 {
		t.Fatalf("Parts = %+v", p.Parts)
	}
	a := p.Parts[0]
	if a.Filename != "Invoice 2024-031 overdue – reminder.eml" || a.ContentType != "message/rfc822" {
		t.Errorf("Parts[0] = %+v", viewOfPart(a))
	}
	if !bytes.HasPrefix(a.Data, []byte("From: Billing <billing@vendor.example>")) {
		t.Errorf("Parts[0].Data = %q, want the whole embedded message", a.Data)
	}
}

func TestParseAutoReplyAndBounce(t *testing.T) {
	p := parseFile(t, "auto-reply.eml")
	wantNoProblems(t, p)
	if got := p.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", got)
	}

	p = parseFile(t, "bounce.eml")
	wantNoProblems(t, p)
	if p.From.Email != "mailer-daemon@googlemail.com" {
		t.Errorf("From = %+v", p.From)
	}
	if ct, params, _ := p.Header.ContentType(); ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("Content-Type = %s %v", ct, params)
	}
	wantContains(t, "Text", p.Text, "** Address not found **")
	var names []string
	for _, part := range p.Parts {
		names = append(names, part.Filename+" "+part.ContentType)
	}
	want := []string{"attachment-1.txt message/delivery-status", "[#21] Your request was received.eml message/rfc822"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("Parts = %q, want %q", names, want)
	}
}

func TestParseHeadersOnly(t *testing.T) {
	p := parseFile(t, "headers-only.eml")
	wantNoProblems(t, p)
	if p.Subject != "(no body)" || p.Text != "" || p.From.Email != "judy.novak@example.com" {
		t.Errorf("Subject, Text, From = %q, %q, %+v", p.Subject, p.Text, p.From)
	}
}

func TestParseUnknownCharset(t *testing.T) {
	p := parseFile(t, "unknown-charset.eml")
	wantProblem(t, p, `unknown charset "x-unknown-8bit"`)
	wantProblem(t, p, `unknown charset "x-mac-french-unknown"`)
	// Kept, decoded as the likeliest legacy charset rather than dropped.
	wantContains(t, "Text", p.Text, "la télécommande ne fonctionne plus")
	if p.Subject != "Télécommande" {
		t.Errorf("Subject = %q", p.Subject)
	}
}

func TestParseFormatFlowed(t *testing.T) {
	p := parseFile(t, "flowed.eml")
	wantNoProblems(t, p)
	wantContains(t, "Text", p.Text,
		"Hello, since the update to version 4.2 the calendar sync stops after a few minutes and only a restart of the app helps. This happens on two different phones.\n\n>From the log",
		"> Could you tell us which version you use and whether the problem started recently?",
		"-- \nLeo")
}

// Inputs that once were or easily could be trouble.
func TestParseDegenerate(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		wantText string
		problem  string
	}{
		{"empty", "", "", "From: no address"},
		{"blank lines", "\r\n\r\n", "", "From: no address"},
		{"no header", "just some words\nand \xe9t\xe9\n", "just some words\nand été", "no header fields"},
		{"header only garbage", "From: a@b.c\nnot a header", "", "dropped malformed line"},
		{"no boundary", "From: a@b.c\nContent-Type: multipart/mixed\n\nhello", "hello", "no boundary"},
		{"boundary never found", "From: a@b.c\nContent-Type: multipart/mixed; boundary=zz\n\nhello", "hello", "no part found"},
		{"invalid content type", "From: a@b.c\nContent-Type: garbage\n\nhello", "hello", "invalid media type"},
		{"bad transfer encoding", "From: a@b.c\nContent-Transfer-Encoding: x-uue\n\nhello", "hello", "unknown Content-Transfer-Encoding"},
		{"invalid utf-8 declared utf-8", "From: a@b.c\nContent-Type: text/plain; charset=utf-8\n\nbad \xff byte", "bad \uFFFD byte", "invalid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Parse([]byte(tt.raw))
			if p.Text != tt.wantText {
				t.Errorf("Text = %q, want %q", p.Text, tt.wantText)
			}
			if tt.problem != "" {
				wantProblem(t, p, tt.problem)
			}
			for _, pr := range p.Problems {
				if strings.Contains(pr, "panic") {
					t.Errorf("Problems = %q", p.Problems)
				}
			}
		})
	}
}

func TestParseTooDeep(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@b.c\nContent-Type: multipart/mixed; boundary=b0\n\n")
	for i := 1; i <= 30; i++ {
		b.WriteString("--b" + itoa(i-1) + "\nContent-Type: multipart/mixed; boundary=b" + itoa(i) + "\n\n")
	}
	b.WriteString("--b30\nContent-Type: text/plain\n\ndeep text\n")
	p := Parse([]byte(b.String()))
	wantProblem(t, p, "nested deeper than")
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestParseAddressFallback(t *testing.T) {
	raw := "From: Jane <JANE@Example.org>\nTo: \"Sales, EU <sales@acme.test>, =?utf-8?q?Ren=C3=A9?= <rene@acme.test>;\n\nhi\n"
	p := Parse([]byte(raw))
	want := []Address{{Name: "Sales, EU", Email: "sales@acme.test"}, {Name: "René", Email: "rene@acme.test"}}
	if !reflect.DeepEqual(p.To, want) {
		t.Errorf("To = %+v, want %+v", p.To, want)
	}
	wantProblem(t, p, "To:")
	if p.From != (Address{Name: "Jane", Email: "jane@example.org"}) {
		t.Errorf("From = %+v", p.From)
	}
}

func TestMsgIDs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"<a@b>", []string{"a@b"}},
		{"<a@b> <c@d>", []string{"a@b", "c@d"}},
		{"<a@b>,<c@d>", []string{"a@b", "c@d"}},
		{"  <a@b>\r\n\t<c@d>  ", []string{"a@b", "c@d"}},
		{"a@b", []string{"a@b"}},
		{"a@b c@d", []string{"a@b", "c@d"}},
		{"<a@b> (comment <x@y>) <c@d>", []string{"a@b", "c@d"}},
		{"(nested (comment)) <a@b>", []string{"a@b"}},
		{`Your message of "Mon, 4 Mar <q@r>" <a@b>`, []string{"a@b"}},
		{"<a@b", []string{"a@b"}},
		{"<a@b <c@d>", []string{"a@b", "c@d"}},
		{"<abc\r\n def@host>", []string{"abcdef@host"}},
		{"<a@b> <a@b>", []string{"a@b"}},
		{"<12345>", []string{"12345"}},
		{"no ids here", nil},
		{"<>", nil},
	}
	for _, tt := range tests {
		if got := MsgIDs(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("MsgIDs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHTMLToText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"<p>a</p><p>b</p>", "a\n\nb"},
		{"a<br>b<br/><br />c", "a\nb\n\nc"},
		{"<div>a</div><div>b</div>", "a\nb"},
		{"a   \n  b", "a b"},
		{"&lt;tag&gt; &amp; &eacute;&#233;&#xe9; &euro;", "<tag> & ééé €"},
		{"<ul><li>one</li><li>two</li></ul>", "- one\n- two"},
		{"<blockquote><p>quoted</p><p>more</p></blockquote><p>reply</p>", "> quoted\n>\n> more\n\nreply"},
		{"<pre>  code\n    indented</pre>", "code\n    indented"},
		{"<style>p{}</style><script>x<y</script>shown", "shown"},
		{"<!-- hidden --><b>bold</b> <i>it</i>", "bold it"},
		{"a < b and c > d", "a < b and c > d"},
		{`<a href="x>y">link</a>`, "link"},
		{"<p>unclosed", "unclosed"},
		{"<table><tr><td>k</td><td>v</td></tr><tr><td>k2</td><td>v2</td></tr></table>", "k v\nk2 v2"},
	}
	for _, tt := range tests {
		if got := htmlToText(tt.in); got != tt.want {
			t.Errorf("htmlToText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeBase64Lenient(t *testing.T) {
	tests := []struct {
		in       string
		want     string
		bad, cut bool
	}{
		{"aGVsbG8=", "hello", false, false},
		{"aGVs\r\nbG8=\r\n", "hello", false, false},
		{"aGVsbG8", "hello", false, true},
		{"aGVs*bG8=", "hello", true, false},
		{"aGk=aGk=", "hihi", false, false},
	}
	for _, tt := range tests {
		got, bad, cut := decodeBase64(nil, []byte(tt.in))
		if string(got) != tt.want || bad != tt.bad || cut != tt.cut {
			t.Errorf("decodeBase64(%q) = %q, %v, %v, want %q, %v, %v", tt.in, got, bad, cut, tt.want, tt.bad, tt.cut)
		}
	}
}

func TestDecodeQP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"caf=C3=A9", "café"},
		{"soft=\r\nbreak", "softbreak"},
		{"trailing   \r\nspace", "trailing\r\nspace"},
		{"a=3d=3D", "a=="},
		{"not=an escape=", "not=an escape"},
		{"=ZZ", "=ZZ"},
	}
	for _, tt := range tests {
		if got := string(decodeQP(nil, []byte(tt.in), false)); got != tt.want {
			t.Errorf("decodeQP(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// benchMail is a ~10 KB mail as Gmail sends it: a text and an HTML
// alternative, quoted-printable, and a small base64 attachment. The ticket
// store's benchmarks ingest it too.
func benchMail(tb testing.TB) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "bench", "gmail-10kb.eml"))
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

func TestBenchMailParses(t *testing.T) {
	raw := benchMail(t)
	p := Parse(raw)
	wantNoProblems(t, p)
	if len(raw) < 9000 || len(raw) > 12000 || len(p.Parts) != 1 || p.Parts[0].Filename != "capture d’écran.png" ||
		!strings.HasPrefix(p.Text, "Bonjour, depuis la mise à jour") || p.HTML == "" {
		t.Errorf("bench mail: %d bytes, Parts %+v, Text %.40q", len(raw), p.Parts, p.Text)
	}
}

func BenchmarkParse10KB(b *testing.B) {
	raw := benchMail(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		Parse(raw)
	}
}

func TestParseConcatenatesPlainParts(t *testing.T) {
	raw := "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n" +
		"--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFirst part.\r\n\r\n" +
		"--m\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n" +
		"--m\r\nContent-Type: text/plain\r\n\r\n-- \r\nMailing list footer\r\n" +
		"--m\r\nContent-Type: application/octet-stream\r\n\r\nraw bytes\r\n" +
		"--m--\r\n"
	p := Parse([]byte(raw))
	wantNoProblems(t, p)
	if want := "First part.\n\n-- \nMailing list footer"; p.Text != want {
		t.Errorf("Text = %q, want %q", p.Text, want)
	}
	var names []string
	for _, part := range p.Parts {
		names = append(names, part.Filename)
		if part.Inline {
			t.Errorf("%s is Inline, want attachment (no disposition)", part.Filename)
		}
	}
	if want := []string{"attachment-1.jpg", "attachment-2.bin"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Parts = %q, want %q", names, want)
	}
}

func TestParseHTMLMetaCharset(t *testing.T) {
	raw := "From: a@example.com\nContent-Type: text/html\n\n<html><head><meta charset=\"iso-8859-15\"></head><body>Caf\xe9 \xa4</body></html>"
	p := Parse([]byte(raw))
	wantNoProblems(t, p)
	if p.Text != "Café €" {
		t.Errorf("Text = %q, want %q", p.Text, "Café €")
	}
}

func TestParsePartDoesNotAliasInput(t *testing.T) {
	raw := []byte("From: a@example.com\nContent-Type: application/octet-stream\n\nabc")
	p := Parse(raw)
	copy(raw[len(raw)-3:], "xyz")
	if len(p.Parts) != 1 || string(p.Parts[0].Data) != "abc" {
		t.Errorf("Parts = %+v, want data \"abc\" after the input changed", p.Parts)
	}
}
