package main

// Printing helpers the commands share: JSON output, table cells and the
// quota bar.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/dkim"
	"github.com/mailgate/mailgate/sendlimit"
	"github.com/mailgate/mailgate/smtprelay"
	"github.com/mailgate/mailgate/status"
	"github.com/mailgate/mailgate/tickets"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clip shortens s to n runes for a table cell.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// joinNotes joins the non-empty notes of one table cell with "; ".
func joinNotes(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, "; ")
}

func tagList(t *tickets.Ticket) string {
	tags := append([]string{}, t.Tags...)
	if t.SuppressTriggers {
		tags = append(tags, "triggers-suppressed")
	}
	return strings.Join(tags, ",")
}

func addr(a tickets.Address) string {
	if a.Name == "" {
		return a.Email
	}
	return fmt.Sprintf("%s <%s>", a.Name, a.Email)
}

// shortDuration renders an age for a table: 45s, 12m, 3h05m, 2d04h.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// envelopeFrom shows the null sender of a bounce as SMTP writes it.
func envelopeFrom(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

func ticketRef(id int64) string {
	if id == 0 {
		return "-"
	}
	return fmt.Sprintf("#%d", id)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// quotaCells is the width of the quota bar.
const quotaCells = 10

// quotaColumn renders an account's Gmail use over the last 24 hours for
// `accounts list` and `status`: "[######----] 312/500", plus " BLOCKED by
// Gmail" once Gmail answered with its daily-limit error.
func quotaColumn(ctx context.Context, q *smtprelay.Quota, a *accounts.Account, limits func(accounts.Kind) sendlimit.Limits) string {
	return quotaCell(status.ReadQuota(ctx, q, a.Email, limits(a.Kind).Messages))
}

// quotaCell is quotaBar of q, or why the quota could not be read.
func quotaCell(q status.Quota, err error) string {
	if err != nil {
		return "quota unknown (Redis: " + err.Error() + ")"
	}
	return quotaBar(q.Used, q.Limit, q.Blocked)
}

// quotaBar draws "[######----] 312/500", plus " BLOCKED by Gmail".
func quotaBar(used int64, limit int, blocked bool) string {
	var s string
	if limit <= 0 {
		s = fmt.Sprintf("%d sent (no limit)", used)
	} else {
		n := used * quotaCells / int64(limit)
		// Some use shows as one cell: an empty bar reads as "unused".
		if used > 0 && n == 0 {
			n = 1
		}
		n = min(n, quotaCells)
		s = fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("#", int(n)), strings.Repeat("-", quotaCells-int(n)), used, limit)
	}
	if blocked {
		s += " BLOCKED by Gmail"
	}
	return s
}

// ago says how long before now t was, for humans.
func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

// printRecord writes a record the two ways admins enter one: name, type and
// value for a DNS provider's web form, and a zone-file line, where a value
// over 255 bytes must be split into quoted strings.
func printRecord(w io.Writer, r dkim.Record, prefix string) {
	fmt.Fprintf(w, "%sName:  %s\n%sType:  %s\n%sValue: %s\n%sZone:  %s\n",
		prefix, r.Name, prefix, r.Type, prefix, r.Value, prefix, r.ZoneLine())
}

func indentText(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}
