// Package metrics defines mailgate's Prometheus metrics and the hooks the
// other packages report through.
//
// The core packages (imapfetch, smtprelay) know nothing of Prometheus: they
// call plain hook funcs in their options, and the methods of Metrics are
// those funcs. What describes stored state (queue, quota, accounts) is not
// counted here but read from Redis at each scrape (see state.go), so every
// replica's /metrics tells the truth about the state they share.
package metrics

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mailgate/mailgate/imapfetch"
	"github.com/mailgate/mailgate/oauth"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
)

const namespace = "mailgate"

// Kinds of token refresh failure.
const (
	FailureInvalidGrant = "invalid_grant" // the account must be reconnected
	FailureOther        = "other"         // temporary: endpoint unreachable, ...
)

// Options configure New.
type Options struct {
	// State is read at each scrape for the gauges of stored state (queue,
	// quota, accounts); nil leaves those gauges out. Its Warnings field
	// is ignored.
	State *status.Sources
	// Timeout bounds the reads of one scrape; default 3s.
	Timeout time.Duration
	// Logger receives read failures of the state gauges; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Metrics holds mailgate's metrics in a private registry (never the
// global one, so tests and embedders can run several).
type Metrics struct {
	reg *prometheus.Registry

	fetched, created, comments, duplicates *prometheus.CounterVec
	quarantined, ingestFailures            *prometheus.CounterVec
	suppressed                             *prometheus.CounterVec
	pollDuration                           *prometheus.HistogramVec
	pollErrors                             *prometheus.CounterVec

	relayAccepted prometheus.Counter
	relayRejected *prometheus.CounterVec
	deliveries    *prometheus.CounterVec
	interrupted   prometheus.Counter
	queueLosses   prometheus.Counter
	queueLost     prometheus.Counter

	tokenRefreshes prometheus.Counter
	tokenFailures  *prometheus.CounterVec
}

// New returns the metrics, registered with the Go runtime and process
// collectors in a new registry.
func New(opts Options) *Metrics {
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	account := []string{"account"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		reg:            prometheus.NewRegistry(),
		fetched:        counter("mails_fetched_total", "Mails fetched from Gmail, the initial import included.", account...),
		created:        counter("tickets_created_total", "Tickets opened by fetched mail.", account...),
		comments:       counter("comments_threaded_total", "Fetched mails added to an existing ticket.", account...),
		duplicates:     counter("duplicates_skipped_total", "Fetched mails ingested before (same Message-ID), skipped.", account...),
		quarantined:    counter("mails_quarantined_total", "Mails set aside after failing ingest too many times.", account...),
		ingestFailures: counter("ingest_failures_total", "Failed ingests of a fetched mail, to be retried.", account...),
		suppressed: counter("mails_suppressed_total",
			"Fetched mails kept from opening tickets by the loop rules, by reason (auto-reply, bounce, own-address, rate-limited).",
			"account", "reason"),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "poll_duration_seconds",
			Help:    "Time of a successful search for new mail in an account, its fetches and ingests included.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}, account),
		pollErrors: counter("poll_errors_total", "Failed searches for new mail, and sessions that failed before one (connect, login).", account...),
		relayAccepted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "relay_accepted_total",
			Help: "Messages the SMTP relay accepted and queued."}),
		relayRejected: counter("relay_rejected_total", "Messages, AUTH attempts and recipient addresses the SMTP relay refused, by reason.", "reason"),
		deliveries: counter("relay_deliveries_total",
			"Outcomes of delivery tries, one per recipient, by route (gmail, direct, smarthost) and result (delivered, deferred, bounced).",
			"route", "result"),
		interrupted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "relay_interrupted_tries_total",
			Help: "Delivery tries taken over that had begun and never recorded their outcome (a process killed mid-try): their recipients may have got the message twice."}),
		queueLosses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "relay_queue_recreated_total",
			Help: "Times Redis had lost the delivery queue (restarted empty, flushed) and the relay made it again."}),
		queueLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "relay_queue_lost_messages_total",
			Help: "Accepted messages gone with a delivery queue Redis lost, as far as they could be counted."}),
		tokenRefreshes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "token_refreshes_total",
			Help: "OAuth access token refreshes, failed ones included; fetching and sending share each account's token."}),
		tokenFailures: counter("token_refresh_failures_total", "Failed OAuth access token refreshes, by kind (invalid_grant, other).", "kind"),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.fetched, m.created, m.comments, m.duplicates, m.quarantined, m.ingestFailures, m.suppressed,
		m.pollDuration, m.pollErrors,
		m.relayAccepted, m.relayRejected, m.deliveries, m.interrupted, m.queueLosses, m.queueLost,
		m.tokenRefreshes, m.tokenFailures,
	)
	// Series with fixed labels exist from the start at 0, so a rate or an
	// alert on them works before the first event.
	for _, r := range []string{smtprelay.RejectAuth, smtprelay.RejectSender, smtprelay.RejectHeaderFrom, smtprelay.RejectAddress, smtprelay.RejectSize, smtprelay.RejectQueue, smtprelay.RejectData, smtprelay.RejectBusy, smtprelay.RejectHeader} {
		m.relayRejected.WithLabelValues(r)
	}
	for _, route := range []smtprelay.Route{smtprelay.RouteGmail, smtprelay.RouteDirect, smtprelay.RouteSmarthost} {
		for _, o := range []smtprelay.Outcome{smtprelay.Delivered, smtprelay.Deferred, smtprelay.Bounced} {
			m.deliveries.WithLabelValues(route.String(), o.String())
		}
	}
	m.tokenFailures.WithLabelValues(FailureInvalidGrant)
	m.tokenFailures.WithLabelValues(FailureOther)
	if opts.State != nil {
		m.reg.MustRegister(newStateCollector(*opts.State, opts.Timeout, opts.Logger))
	}
	return m
}

// Registry is where the metrics are registered, for promhttp.HandlerFor
// (package web) and for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Poll is imapfetch.Options.OnPoll: it counts the mail of r, and the
// poll's duration when it succeeded or its failure otherwise. Report's
// Suppressed is left to Suppressed, which knows the reason.
func (m *Metrics) Poll(account string, r imapfetch.Report, took time.Duration, err error) {
	add := func(c *prometheus.CounterVec, n int) {
		if n > 0 {
			c.WithLabelValues(account).Add(float64(n))
		}
	}
	add(m.fetched, r.Fetched)
	add(m.created, r.Created)
	add(m.comments, r.Comments)
	add(m.duplicates, r.Duplicates)
	add(m.quarantined, r.Quarantined)
	add(m.ingestFailures, r.Errors)
	switch {
	case err != nil:
		m.pollErrors.WithLabelValues(account).Inc()
	case took > 0: // 0: work cut short by shutdown, no measure of a poll
		m.pollDuration.WithLabelValues(account).Observe(took.Seconds())
		// The error counter exists once the account polled, for rates.
		m.pollErrors.WithLabelValues(account)
	}
}

// Suppressed is imapfetch.Options.OnSuppressed.
func (m *Metrics) Suppressed(account, reason string) {
	m.suppressed.WithLabelValues(account, reason).Inc()
}

// RelayAccept is smtprelay.ServerOptions.OnAccept.
func (m *Metrics) RelayAccept(accepted bool, reason string) {
	if accepted {
		m.relayAccepted.Inc()
		return
	}
	m.relayRejected.WithLabelValues(reason).Inc()
}

// Delivery is smtprelay.RelayOptions.OnDelivery.
func (m *Metrics) Delivery(route smtprelay.Route, outcome smtprelay.Outcome) {
	m.deliveries.WithLabelValues(route.String(), outcome.String()).Inc()
}

// Interrupted is smtprelay.RelayOptions.OnInterrupted.
func (m *Metrics) Interrupted() { m.interrupted.Inc() }

// QueueLost is smtprelay.RelayOptions.OnQueueLost.
func (m *Metrics) QueueLost(lost int64) {
	m.queueLosses.Inc()
	if lost > 0 {
		m.queueLost.Add(float64(lost))
	}
}

// TokenRefresh is oauth.RegistryOptions.OnRefresh: one registry serves
// both directions, so a refresh is counted once, whichever asked for it.
func (m *Metrics) TokenRefresh(_ string, err error) {
	m.tokenRefreshes.Inc()
	switch {
	case err == nil:
	case errors.Is(err, oauth.ErrInvalidGrant):
		m.tokenFailures.WithLabelValues(FailureInvalidGrant).Inc()
	default:
		m.tokenFailures.WithLabelValues(FailureOther).Inc()
	}
}
