package tickets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Get returns ticket id with its comments.
func (s *Store) Get(ctx context.Context, id int64) (*Ticket, error) {
	tk := s.ticketKey(id)
	var h, threaded *redis.MapStringStringCmd
	var cs *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		h = p.HGetAll(ctx, tk)
		cs = p.LRange(ctx, tk+":comments", 0, -1)
		threaded = p.HGetAll(ctx, tk+":threaded")
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, fmt.Errorf("get #%d: %w", id, err))
	}
	t, err := decodeTicket(id, h.Val())
	if err != nil {
		return nil, err
	}
	for i, stored := range cs.Val() {
		c, err := decodeComment(id, int64(i+1), stored)
		if err != nil {
			return nil, fmt.Errorf("get #%d: %w", id, err)
		}
		c.ThreadedBy = threaded.Val()[strconv.Itoa(i+1)]
		t.Comments = append(t.Comments, *c)
	}
	return t, nil
}

// Comment returns comment index (1-based) of ticket id, whole: a ticket
// event carries a comment without its body, which is read here (or with
// LINDEX <prefix>ticket:<id>:comments <index - 1>).
func (s *Store) Comment(ctx context.Context, id, index int64) (*Comment, error) {
	if index < 1 {
		return nil, fmt.Errorf("%w: #%d has no comment %d", ErrNotFound, id, index)
	}
	stored, err := s.rdb.LIndex(ctx, s.ticketKeys(strconv.FormatInt(id, 10)).comments, index-1).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: #%d has no comment %d", ErrNotFound, id, index)
	}
	if err != nil {
		return nil, s.fail(ctx, fmt.Errorf("get #%d comment %d: %w", id, index, err))
	}
	return decodeComment(id, index, stored)
}

// decodeComment reads a stored comment: its whole JSON object, or, as
// older versions stored it, the object without its opening brace and ids.
func decodeComment(id, index int64, stored string) (*Comment, error) {
	if !strings.HasPrefix(stored, "{") {
		stored = "{" + stored
	}
	var c Comment
	if err := json.Unmarshal([]byte(stored), &c); err != nil {
		return nil, fmt.Errorf("comment %d: %w", index, err)
	}
	c.Ticket, c.Index = id, index
	return &c, nil
}

// ListOptions select tickets for List, newest first.
type ListOptions struct {
	Limit    int64 // 0 means 50
	BeforeID int64 // only tickets with a smaller id; 0 means from the newest
}

// List returns tickets without their comments, newest first.
func (s *Store) List(ctx context.Context, o ListOptions) ([]*Ticket, error) {
	if o.Limit <= 0 {
		o.Limit = 50
	}
	max := "+inf"
	if o.BeforeID > 0 {
		max = "(" + strconv.FormatInt(o.BeforeID, 10)
	}
	ids, err := s.rdb.ZRevRangeByScore(ctx, s.Key("tickets"), &redis.ZRangeBy{Max: max, Min: "-inf", Count: o.Limit}).Result()
	if err != nil {
		return nil, s.fail(ctx, fmt.Errorf("list tickets: %w", err))
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.Key("ticket:"+id))
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, fmt.Errorf("list tickets: %w", err))
	}
	out := make([]*Ticket, 0, len(ids))
	for i, id := range ids {
		n, _ := strconv.ParseInt(id, 10, 64)
		t, err := decodeTicket(n, cmds[i].Val())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Raw returns the stored raw message a comment names in its Raw field.
func (s *Store) Raw(ctx context.Context, ref string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.Key(ref)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("raw message %s: not stored", ref)
	}
	return b, s.fail(ctx, err)
}

// decodeTicket builds a ticket from its hash: the immutable JSON written
// at creation, overlaid with the fields that change.
func decodeTicket(id int64, h map[string]string) (*Ticket, error) {
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: #%d", ErrNotFound, id)
	}
	var t Ticket
	if err := json.Unmarshal([]byte(h["data"]), &t); err != nil {
		return nil, fmt.Errorf("ticket #%d: %w", id, err)
	}
	t.Status = Status(h["status"])
	if u, err := time.Parse(time.RFC3339Nano, h["updated_at"]); err == nil {
		t.UpdatedAt = u
	}
	t.CommentCount, _ = strconv.ParseInt(h["comment_count"], 10, 64)
	return &t, nil
}
