package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/status"
)

// stateCollector reads the shared state from Redis at each scrape: the
// queue, each account's quota and state. A counter in one process could
// not say how deep a queue shared by several processes is.
type stateCollector struct {
	src     status.Sources
	timeout time.Duration
	log     *slog.Logger

	up, readSeconds                     *prometheus.Desc
	queueDepth, queueOldestAge          *prometheus.Desc
	deliveryStopped                     *prometheus.Desc
	quotaUsed, quotaLimit, quotaBlocked *prometheus.Desc
	accountState, lastSuccess           *prometheus.Desc
	quarantined, imported               *prometheus.Desc
}

var accountStates = []accounts.State{accounts.StateConnected, accounts.StateDisconnected, accounts.StateError}

func newStateCollector(src status.Sources, timeout time.Duration, log *slog.Logger) *stateCollector {
	src.Warnings = -1
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &stateCollector{
		src: src, timeout: timeout, log: log,
		up:             desc("state_up", "1 if the shared state (accounts, quota, queue) could be read from Redis at this scrape, else 0."),
		readSeconds:    desc("state_read_seconds", "How long reading the shared state from Redis took at this scrape."),
		queueDepth:     desc("relay_queue_depth", "Messages in the relay queue: not yet sent nor bounced."),
		queueOldestAge: desc("relay_queue_oldest_age_seconds", "Age of the oldest message in the relay queue; 0 when it is empty."),
		deliveryStopped: desc("relay_delivery_stopped",
			"1 while delivery cannot proceed because the delivery queue is missing from Redis (restarted empty, flushed), else 0."),
		quotaUsed:    desc("quota_used", "Messages an account sent via Gmail in the rolling 24 hours.", "account"),
		quotaLimit:   desc("quota_limit", "An account's daily Gmail sending limit.", "account"),
		quotaBlocked: desc("quota_blocked", "1 while Gmail refuses an account's mail with its daily-limit error.", "account"),
		accountState: desc("account_state", "1 for an account's current state (connected, disconnected, error), 0 for the others.", "account", "state"),
		lastSuccess:  desc("poll_last_success_timestamp_seconds", "Unix time of an account's last successful search for new mail.", "account"),
		quarantined:  desc("account_quarantined_mails", "Mails of an account set aside after failing ingest, all time.", "account"),
		imported:     desc("account_imported_mails", "Mails of an account turned into tickets or comments, all time.", "account"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.readSeconds, c.queueDepth, c.queueOldestAge, c.deliveryStopped, c.quotaUsed, c.quotaLimit,
		c.quotaBlocked, c.accountState, c.lastSuccess, c.quarantined, c.imported} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	st, err := c.src.Gather(ctx)
	gauge(c.readSeconds, time.Since(start).Seconds())
	if err != nil {
		// The counters still go out: a scrape must not fail because Redis
		// is slow, and state_up 0 is what to alert on.
		c.log.Warn("metrics: cannot read the shared state", "err", err)
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.queueDepth, float64(st.Queue.Depth))
	gauge(c.queueOldestAge, st.Queue.OldestAgeSeconds)
	gauge(c.deliveryStopped, b2f(st.Queue.Problem != ""))
	for _, a := range st.Accounts {
		gauge(c.quotaUsed, float64(a.Quota.Used), a.Email)
		gauge(c.quotaLimit, float64(a.Quota.Limit), a.Email)
		gauge(c.quotaBlocked, b2f(a.Quota.Blocked), a.Email)
		for _, s := range accountStates {
			gauge(c.accountState, b2f(a.State == s), a.Email, string(s))
		}
		if !a.LastPoll.IsZero() {
			gauge(c.lastSuccess, float64(a.LastPoll.UnixMilli())/1000, a.Email)
		}
		gauge(c.quarantined, float64(a.Quarantined), a.Email)
		gauge(c.imported, float64(a.Imported), a.Email)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
