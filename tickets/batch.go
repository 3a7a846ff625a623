package tickets

import (
	"context"

	"github.com/mailgate/mailgate/mailparse"
)

// BatchMail is one mail handed to IngestBatch.
type BatchMail struct {
	Raw    []byte
	Parsed *mailparse.Parsed // nil: IngestBatch parses Raw
	Source Source
}

// BatchResult is what IngestBatch did with one mail: its Result, or Err
// when that mail was not stored. When the store cannot be reached, every
// mail not yet stored gets that error.
type BatchResult struct {
	Result
	Err error
}

// IngestBatch ingests mails in order, each exactly once as Ingest does,
// and answers for each in the same order: mails later in the batch thread
// onto tickets opened earlier in it.
func (s *Store) IngestBatch(ctx context.Context, mails []BatchMail) []BatchResult {
	out := make([]BatchResult, len(mails))
	for i, m := range mails {
		p := m.Parsed
		if p == nil {
			p = mailparse.Parse(m.Raw)
		}
		out[i].Result, out[i].Err = s.IngestParsed(ctx, m.Raw, p, m.Source)
	}
	return out
}
