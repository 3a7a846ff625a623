// This file keeps the Sent folder's cursor (fetch.sent_folder), beside
// INBOX's in the account hash.

package accounts

import (
	"context"
	"fmt"
	"strconv"
)

// SentCursor returns how far fetching got in the account's Sent folder
// (read only with fetch.sent_folder); the zero Cursor when it never was.
func (s *Store) SentCursor(ctx context.Context, email string) (Cursor, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return Cursor{}, err
	}
	v, err := s.rdb.HMGet(ctx, s.accountKey(e), "email", "sent_uidvalidity", "sent_last_uid").Result()
	if err != nil {
		return Cursor{}, fmt.Errorf("sent cursor of %s: %w", e, err)
	}
	if v[0] == nil {
		return Cursor{}, fmt.Errorf("sent cursor of %s: %w", e, ErrNotFound)
	}
	str := func(x any) string { s, _ := x.(string); return s }
	return Cursor{UIDValidity: parseUint32(str(v[1])), LastUID: parseUint32(str(v[2]))}, nil
}

// SetSentCursor records how far fetching got in the Sent folder.
func (s *Store) SetSentCursor(ctx context.Context, email string, c Cursor) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	return s.update(ctx, e, "exists", false, update{set: []string{
		"sent_uidvalidity", strconv.FormatUint(uint64(c.UIDValidity), 10),
		"sent_last_uid", strconv.FormatUint(uint64(c.LastUID), 10),
	}})
}
