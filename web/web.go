// Package web serves mailgate's HTTP endpoints: an HTML console, health,
// readiness, Prometheus metrics and a JSON status.
//
//	GET /         HTML console (console.html) from the same Options.Status, read-only
//	GET /healthz  200 "ok" while the process runs (liveness)
//	GET /readyz   200 "ready", or 503 with the reason (Redis down, listeners not up,
//	              the delivery queue missing from Redis: nothing would go out)
//	GET /metrics  Prometheus text exposition of Options.Registry
//	GET /status   JSON from Options.Status (package status)
//	GET /debug/pprof/...  Go's profiles (net/http/pprof), with Options.Pprof
//
// The listener is meant for operators and monitoring: it binds loopback by
// default (http.listen). With Options.Token set, /metrics and /status
// require it as a Bearer token (RFC 6750), and so does the console; a
// browser cannot send that header, so ?token= (which sets a cookie for the
// next pages) and that cookie are accepted too: /status shows customer
// addresses and the From and Subject of quarantined mail. /healthz and
// /readyz stay open for probes; they tell nothing about anyone's mail.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure New.
type Options struct {
	// Ready reports whether mailgate can do its work now (Redis answers,
	// the listeners are up, delivery can proceed); nil means always ready.
	Ready func(ctx context.Context) error
	// Status returns what /status prints as JSON, usually
	// status.Sources.Gather; nil leaves /status out.
	Status func(ctx context.Context) (any, error)
	// Registry is served on /metrics; nil leaves /metrics out.
	Registry *prometheus.Registry
	// Timeout bounds one Ready or Status call; default 5s.
	Timeout time.Duration
	Logger  *slog.Logger
	// Token, when set, must come as "Authorization: Bearer <Token>" on
	// /metrics and /status. It is never logged.
	Token string
	// Pprof serves Go's runtime profiles on /debug/pprof/, behind Token
	// like /status, to find where a process's memory and CPU go.
	Pprof bool
	// Version and Redis (where the data lives, without credentials) are
	// shown on the console; WarnAt is the fraction of the daily Gmail limit
	// at which the relay warns (relay.quota_warn_at), 0 for none.
	Version string
	Redis   string
	WarnAt  float64
}

// Server is the HTTP listener. Create it with New.
type Server struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	srv  *http.Server
}

// New returns a Server with its routes.
func New(opts Options) *Server {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	// GET patterns also answer HEAD.
	s.mux.Handle("GET /{$}", s.private(http.HandlerFunc(s.console)))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if opts.Registry != nil {
		s.mux.Handle("GET /metrics", s.private(promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
			// A collector that fails (Redis slow) must not hide the others.
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      promLogger{s.log},
		})))
	}
	if opts.Status != nil {
		s.mux.Handle("GET /status", s.private(http.HandlerFunc(s.status)))
	}
	if opts.Pprof {
		s.mux.Handle("GET /debug/pprof/", s.private(http.HandlerFunc(pprof.Index)))
		s.mux.Handle("GET /debug/pprof/profile", s.private(http.HandlerFunc(pprof.Profile)))
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      opts.Timeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the routes, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers HTTP on l until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting and waits for the requests in progress, until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// healthz says the process runs and serves HTTP: nothing else, so that a
// Redis outage restarts nothing (that is readiness).
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
		defer cancel()
		if err := s.opts.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Timeout)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	st, err := s.opts.Status(ctx)
	if err != nil {
		s.log.Warn("web: /status", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		s.log.Warn("web: /status: write", "err", err)
	}
}

// private lets a request through to h only with the Bearer token, when
// one is configured. The comparison takes the same time whatever the
// token sent, so timing does not reveal how much of it was right.
func (s *Server) private(h http.Handler) http.Handler {
	if s.opts.Token == "" {
		return h
	}
	want := sha256.Sum256([]byte(s.opts.Token))
	ok := func(got string) bool {
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		allowed := strings.EqualFold(scheme, "Bearer") && ok(got)
		if q := r.URL.Query().Get("token"); !allowed && q != "" && ok(q) {
			// Remember it for the page's reloads and links, only for this
			// site and never for scripts or other sites' requests.
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/",
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			allowed = true
		}
		if c, err := r.Cookie(tokenCookie); !allowed && err == nil && ok(c.Value) {
			allowed = true
		}
		if !allowed {
			// RFC 6750 section 3: say which scheme is wanted.
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailgate"`)
			http.Error(w, "unauthorized: send Authorization: Bearer <http.token>, or open /?token=<http.token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tokenCookie holds the token once a browser opened a page with ?token=.
const tokenCookie = "mailgate_token"

// promLogger passes promhttp's errors to slog.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) { p.l.Warn("web: /metrics: " + fmt.Sprint(v...)) }
