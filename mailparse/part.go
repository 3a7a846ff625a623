package mailparse

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"

	"github.com/mailgate/mailgate/internal/oneline"
)

// addPart records a leaf that is not body text. data is its decoded
// content; Parts passes nil unless the name needs it.
func (w *walker) addPart(h message.Header, mt, disp, name string, data []byte, ctx walkCtx) {
	if name == "" && isMessage(mt) {
		// A forwarded message is shown under its own subject.
		if subj := w.embeddedSubject(data); subj != "" {
			name = sanitizeFilename(subj) + ".eml"
		}
	}
	if name == "" {
		name = fmt.Sprintf("attachment-%d.%s", len(w.p.Parts)+1, extension(mt))
	}
	part := Part{
		ContentType: mt,
		Disposition: disp,
		Filename:    name,
		ContentID:   contentID(h.Get("Content-Id")),
		Inline:      disp == "inline",
	}
	if !w.partsOnly {
		part.Data = data
	}
	w.p.Parts = append(w.p.Parts, part)
	w.inRelated = append(w.inRelated, ctx.inRelated)
}

// partName is the name a part gives itself, made safe, or "".
func partName(params, dparams map[string]string) string {
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	return sanitizeFilename(name)
}

// isMessage reports whether mt is a whole message (RFC 2046 section
// 5.2.1, RFC 6532 section 3.7).
func isMessage(mt string) bool { return mt == "message/rfc822" || mt == "message/global" }

// embeddedSubject decodes the Subject of a message/rfc822 part. Problems
// of the embedded message are not the outer message's.
func (w *walker) embeddedSubject(data []byte) string {
	scratch := &walker{p: &Parsed{}, br: w.br}
	h, _ := scratch.readHeader(data, "")
	return oneline.Of(scratch.headerText(h.Get("Subject"), "Subject"))
}

func contentID(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "<")
	v = strings.TrimSuffix(v, ">")
	return strings.ToValidUTF8(strings.TrimSpace(v), "")
}

// decideInline applies RFC 2387: a part of a multipart/related that the
// HTML refers to by cid: is shown in place even without a
// Content-Disposition.
func (w *walker) decideInline() {
	var refs map[string]bool
	for i := range w.p.Parts {
		a := &w.p.Parts[i]
		if a.Inline || a.Disposition != "" || !w.inRelated[i] || a.ContentID == "" {
			continue
		}
		if refs == nil {
			refs = cidRefs(w.html())
		}
		a.Inline = refs[strings.ToLower(a.ContentID)]
	}
}

// html returns the HTML body, which Parts decodes only now, when a part's
// inline decision needs it, the same way Parse does.
func (w *walker) html() string {
	if w.partsOnly {
		for _, t := range w.rawHTML {
			w.text("text/html", t.params, t.cte, t.body, false)
		}
		w.rawHTML = nil
		w.p.HTML = strings.TrimSpace(strings.Join(w.htmls, "\n"))
	}
	return w.p.HTML
}

// cidRefs returns the lower-cased Content-IDs that html refers to with
// cid: URLs (RFC 2392).
func cidRefs(html string) map[string]bool {
	refs := map[string]bool{}
	s := strings.ToLower(html)
	for {
		i := strings.Index(s, "cid:")
		if i < 0 {
			return refs
		}
		s = s[i+4:]
		end := strings.IndexAny(s, "\"'>) \t\r\n")
		if end < 0 {
			end = len(s)
		}
		if id, err := url.PathUnescape(s[:end]); err == nil {
			refs[id] = true
		}
		refs[s[:end]] = true
		s = s[end:]
	}
}

// sanitizeFilename keeps the base name only, so a stored attachment can
// never be written outside its directory, and drops control characters.
func sanitizeFilename(s string) string {
	s = oneline.Of(s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if s == "." || s == ".." {
		return ""
	}
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200])
	}
	return s
}

// extensions names synthesised attachments. A fixed table, not
// mime.ExtensionsByType, so names do not depend on the host's mime.types.
var extensions = map[string]string{
	"application/gzip":              "gz",
	"application/json":              "json",
	"application/msword":            "doc",
	"application/octet-stream":      "bin",
	"application/pdf":               "pdf",
	"application/pgp-encrypted":     "pgp",
	"application/pgp-signature":     "asc",
	"application/pkcs7-mime":        "p7m",
	"application/pkcs7-signature":   "p7s",
	"application/rtf":               "rtf",
	"application/vnd.ms-excel":      "xls",
	"application/vnd.ms-powerpoint": "ppt",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "xlsx",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "docx",
	"application/x-pkcs7-signature":                                             "p7s",
	"application/xml":                                                           "xml",
	"application/zip":                                                           "zip",
	"audio/mpeg":                                                                "mp3",
	"image/bmp":                                                                 "bmp",
	"image/gif":                                                                 "gif",
	"image/heic":                                                                "heic",
	"image/jpeg":                                                                "jpg",
	"image/png":                                                                 "png",
	"image/svg+xml":                                                             "svg",
	"image/tiff":                                                                "tif",
	"image/webp":                                                                "webp",
	"message/delivery-status":                                                   "txt",
	"message/disposition-notification":                                          "txt",
	"message/global":                                                            "eml",
	"message/rfc822":                                                            "eml",
	"text/calendar":                                                             "ics",
	"text/csv":                                                                  "csv",
	"text/html":                                                                 "html",
	"text/plain":                                                                "txt",
	"text/rfc822-headers":                                                       "txt",
	"text/vcard":                                                                "vcf",
	"text/x-vcard":                                                              "vcf",
	"video/mp4":                                                                 "mp4",
}

func extension(mt string) string {
	if e, ok := extensions[mt]; ok {
		return e
	}
	if strings.HasPrefix(mt, "text/") {
		return "txt"
	}
	return "bin"
}
