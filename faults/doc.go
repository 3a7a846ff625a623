// Package faults is mailgate's fault suite: it breaks the things mailgate
// depends on, on purpose and with real processes, and checks that what
// mailgate promises still holds. Its tests (`go test ./faults/`, with
// MG_INTEGRATION=1, which ./scripts/test sets) build the production
// binary, run `mailgate serve` against real Redis (standalone with an
// append-only file, Sentinel, Cluster), a real Dovecot (or, where Dovecot
// is not installed, the in-process fake Gmail) and a fake smarthost, feed
// it a steady load of incoming mail and outgoing notifications, and then:
//
//   - kill Redis (-9) and restart it, with its data or empty, or freeze it
//     (SIGSTOP);
//   - kill the master of a Sentinel set or of a Cluster's shard;
//   - cut the IMAP and SMTP connections at the worst moments, through a
//     proxy (internal/faultproxy);
//   - kill `mailgate serve` (-9) and start it again.
//
// Each scenario then checks, once the fault has healed and the load has
// drained: no accepted message lost; no recipient given a message twice,
// except a copy the peer accepted while mailgate could not learn or record
// it (a kill between the peer's 250 and the record, a cut after the final
// dot: RFC 1047), which is counted and logged; every mail a ticket exactly
// once; no mail \Seen without its ticket; and the time until mail flows
// again, which the tests log and bound generously (resumeBound).
package faults
