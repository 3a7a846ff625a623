package web

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/status"
)

// consoleHTML is the page served at /: plain HTML that works without
// JavaScript and reloads itself every 15 seconds (meta refresh).
//
//go:embed console.html
var consoleHTML string

var consoleTmpl = template.Must(template.New("console").Funcs(template.FuncMap{
	"ago":     ago,
	"in":      in,
	"percent": func(n int64, d int) int64 { return n * 100 / int64(max(d, 1)) },
	"warnAt":  sendlimit.WarnAt,
	// A meter's value is in its high (coloured) region only when above
	// high, while the warning starts at the threshold itself: the bar's
	// high sits half a message below it.
	"meterHigh": func(limit int, frac float64) float64 { return float64(sendlimit.WarnAt(limit, frac)) - 0.5 },
	"over": func(used int64, limit int, frac float64) bool {
		w := sendlimit.WarnAt(limit, frac)
		return w > 0 && used >= int64(w)
	},
}).Parse(consoleHTML))

// consoleView is what the template reads: the same status the /status
// endpoint prints, plus what the process knows about itself.
type consoleView struct {
	S       *status.Status
	Error   string
	Version string
	Redis   string
	WarnAt  float64
	Routes  []string
}

// console renders the status as an HTML page. The figures come from
// Options.Status, the one source /status prints, so the two never differ.
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	v := consoleView{Version: s.opts.Version, Redis: s.opts.Redis, WarnAt: s.opts.WarnAt, Routes: s.routes()}
	if s.opts.Status != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
		defer cancel()
		got, err := s.opts.Status(ctx)
		switch st, ok := got.(*status.Status); {
		case err != nil:
			v.Error = err.Error()
		case ok:
			v.S = st
		default:
			v.Error = fmt.Sprintf("status of type %T cannot be shown here; see /status", got)
		}
	}
	var buf bytes.Buffer
	if err := consoleTmpl.Execute(&buf, v); err != nil {
		s.log.Warn("web: /: render", "err", err)
		http.Error(w, "cannot render the console: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if v.Error != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(buf.Bytes())
}

// routes lists the endpoints this server answers, for the page's footer.
func (s *Server) routes() []string {
	r := []string{"/healthz", "/readyz"}
	if s.opts.Registry != nil {
		r = append(r, "/metrics")
	}
	if s.opts.Status != nil {
		r = append(r, "/status")
	}
	if s.opts.Pprof {
		r = append(r, "/debug/pprof/")
	}
	return r
}

// ago says how long before now t was, to the second; "never" for zero.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Truncate(time.Second).String() + " ago"
}

// in says how long after now t is, to the second, as "in 1h2m3s"; "now"
// when t has come.
func in(now, t time.Time) string {
	if !t.After(now) {
		return "now"
	}
	return "in " + t.Sub(now).Truncate(time.Second).String()
}
