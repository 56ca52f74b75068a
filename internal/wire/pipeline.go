package wire

import "time"

// DeadLetter is a message the ingest could not store, kept in the dead-letter stream with why.
type DeadLetter struct {
	Seq        uint64 `json:"seq"`        // in the dead-letter stream
	Subject    string `json:"subject"`    // the original subject
	Reason     string `json:"reason"`     // decode | invalid | too_large | max_deliveries
	Error      string `json:"error"`      // what exactly was wrong
	Deliveries int    `json:"deliveries"` // deliveries of the original when it was dead-lettered
	StreamSeq  uint64 `json:"stream_seq"` // the original's sequence in the events stream
	// BatchIndex is the event's place (from 1) in the event batch of BatchCount events it came
	// in (HeaderEvents), when it was dead-lettered on its own; both are 0 otherwise.
	BatchIndex int `json:"batch_index,omitempty"`
	BatchCount int `json:"batch_count,omitempty"`
	// Time is when the message was dead-lettered; OriginalTime when the original was stored in
	// the events stream. Both are the streams' timestamps.
	Time         time.Time           `json:"time"`
	OriginalTime time.Time           `json:"original_time"`
	Headers      map[string][]string `json:"headers,omitempty"` // the original headers
	// Payload is the original payload byte for byte (in JSON, bytes that are not UTF-8 show as
	// U+FFFD; a replay republishes the stored bytes).
	Payload string `json:"payload"`
}

// IngestStatus is the event pipeline's state as the hub sees it.
type IngestStatus struct {
	Consumer    string `json:"consumer"`
	Pending     uint64 `json:"pending"`
	AckPending  uint64 `json:"ack_pending"`
	DeadLetters uint64 `json:"dead_letters"`
}

// HubStatus is GET /api/v1/status.
type HubStatus struct {
	Version string         `json:"version"`
	Store   string         `json:"store"`
	Agents  map[string]int `json:"agents"`
	Ingest  *IngestStatus  `json:"ingest,omitempty"`
	// IngestError says why Ingest is missing.
	IngestError string `json:"ingest_error,omitempty"`
	// Leadership and Replicas: the hub's replicas and which one leads (docs/ha.md).
	Leadership *HubLeadership `json:"leadership,omitempty"`
	Replicas   []HubReplica   `json:"replicas"`
}
