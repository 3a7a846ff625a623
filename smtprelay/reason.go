package smtprelay

import "log/slog"

// reason says why a message does not go via its account's Gmail in this
// try, or, for reasonAlias, why it does though its sender is not the
// account. The log text is made from it (String); the details that vary, such
// as the From address or the counts, go in separate log attributes, so no
// decision is ever taken by reading text that came from the message.
type reason int

const (
	reasonNone              reason = iota // it goes via Gmail
	reasonBounce                          // a bounce the relay made: null sender, never via an account
	reasonNotAccount                      // the envelope sender is not a connected account
	reasonNotConnected                    // an admin disconnected the account, or it is in error
	reasonAccountUnusable                 // Gmail cannot be used as the account now (its grant was revoked)
	reasonGmailOff                        // an admin turned sending via Gmail off for the account
	reasonFromNotAccount                  // the From header is not the account: Gmail would rewrite it
	reasonAttachment                      // a real attachment, not only inline images
	reasonTooManyRecipients               // more recipients than Gmail takes in one message
	reasonOverQuota                       // the account's count of the last 24 hours reached its limit
	reasonGmailLimit                      // Gmail refused with its daily sending limit error
	reasonAlias                           // it goes via Gmail: the sender is a "Send mail as" alias of the account
	reasonGmailThrottled                  // Gmail asked us to leave the account alone for a while
)

var reasonText = [...]string{
	reasonNone:              "via Gmail",
	reasonBounce:            "a bounce: null sender, never sent as an account",
	reasonNotAccount:        "sender is not a connected account",
	reasonNotConnected:      "account is not connected",
	reasonAccountUnusable:   "account cannot send via Gmail now",
	reasonGmailOff:          "send via Gmail is off for this account",
	reasonFromNotAccount:    "From header is not the account: Gmail would rewrite it",
	reasonAttachment:        "the message has a real attachment",
	reasonTooManyRecipients: "more recipients than Gmail takes in one message",
	reasonOverQuota:         "daily Gmail quota reached",
	reasonGmailLimit:        "Gmail reported its daily sending limit",
	reasonAlias:             "via Gmail as a \"Send mail as\" alias of the account",
	reasonGmailThrottled:    "Gmail is throttling the account",
}

// String is the reason in words, for logs and the queue's last error.
func (r reason) String() string {
	if r < 0 || int(r) >= len(reasonText) {
		return "unknown reason"
	}
	return reasonText[r]
}

// LogValue logs the reason as its words, in text and JSON logs alike.
func (r reason) LogValue() slog.Value { return slog.StringValue(r.String()) }

// waitHelps reports whether waiting for the account's quota to free lets
// the message go via Gmail later: only then does the defer policy keep it
// queued. An attachment, a foreign From or a revoked account stay so.
func (r reason) waitHelps() bool {
	return r == reasonOverQuota || r == reasonGmailLimit
}
