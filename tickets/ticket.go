package tickets

import (
	"time"

	"github.com/mailgate/mailgate/mailparse"
)

// Status is a ticket's place in the helpdesk's workflow.
type Status string

const (
	StatusNew    Status = "new"
	StatusOpen   Status = "open"
	StatusSolved Status = "solved"
)

// RoleAgent is Comment.Role of an agent's answer.
const RoleAgent = "agent"

// Address is a mailbox as the parser reads it: a display name and a
// lower-cased address. Tickets and comments store it as is.
type Address = mailparse.Address

// Ticket is one conversation with a requester. Its comments are the mails
// of the conversation, oldest first.
type Ticket struct {
	ID               int64     `json:"id,omitempty"`
	SupportAddress   string    `json:"support_address"`
	Requester        Address   `json:"requester"`
	CC               []Address `json:"cc"`
	Subject          string    `json:"subject"`
	Status           Status    `json:"status"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	SuppressTriggers bool      `json:"suppress_triggers"`
	Tags             []string  `json:"tags"`
	Source           string    `json:"source,omitempty"`
	CommentCount     int64     `json:"comment_count,omitempty"`
	// RelatedTicket is the ticket a mail named but could not join, and
	// RelatedReason why (RelatedSubjectTokenStranger); both empty for a
	// ticket that names none.
	RelatedTicket int64     `json:"related_ticket,omitempty"`
	RelatedReason string    `json:"related_reason,omitempty"`
	Comments      []Comment `json:"comments,omitempty"`
}

// RelatedSubjectTokenStranger is the RelatedReason of a ticket opened by a
// mail whose "[#1042]" subject token named a ticket its sender takes no
// part in: a token is easy to type, so it does not let a stranger write
// into someone else's conversation (see Options.TokenThreadingAnyone).
const RelatedSubjectTokenStranger = "subject-token-stranger"

// Comment is one mail of a ticket.
type Comment struct {
	Ticket int64 `json:"ticket,omitempty"`
	// Index is the comment's 1-based position in its ticket.
	Index int64 `json:"index,omitempty"`
	// ThreadedBy says which rule attached this mail to an existing ticket:
	// "in-reply-to", "references", "gmail-thread" or "subject-token"; empty
	// for the mail that opened the ticket.
	ThreadedBy string  `json:"threaded_by,omitempty"`
	Author     Address `json:"author"`
	// Role is "agent" for an answer an agent sent from the support
	// mailbox itself (its Sent folder); empty for mail received.
	Role        string       `json:"role,omitempty"`
	To          []Address    `json:"to"`
	CC          []Address    `json:"cc"`
	Subject     string       `json:"subject"`
	Text        string       `json:"text"`
	HTML        string       `json:"html,omitempty"`
	MessageID   string       `json:"message_id,omitempty"`
	InReplyTo   []string     `json:"in_reply_to,omitempty"`
	References  []string     `json:"references,omitempty"`
	Date        time.Time    `json:"date"`
	ReceivedAt  time.Time    `json:"received_at"`
	Attachments []Attachment `json:"attachments"`
	// Raw names the stored raw message (key "raw:<sha256>" under the
	// store's prefix); RawSize is its size and RawTruncated tells whether
	// it was cut at the configured cap.
	Raw          string   `json:"raw"`
	RawSize      int64    `json:"raw_size"`
	RawTruncated bool     `json:"raw_truncated,omitempty"`
	Problems     []string `json:"problems,omitempty"`
}

// Attachment describes one stored attachment; its bytes live once per
// SHA-256 under "blob:<sha256>".
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	ContentID   string `json:"content_id,omitempty"`
	Inline      bool   `json:"inline"`
}
