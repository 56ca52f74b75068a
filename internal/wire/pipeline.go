package wire

import "time"

// DeadLetter is a message the ingest could not store, kept with why.
type DeadLetter struct {
	Seq        uint64 `json:"seq"`
	Subject    string `json:"subject"`
	Reason     string `json:"reason"` // decode | invalid | too_large | max_deliveries
	Error      string `json:"error"`  // what exactly was wrong
	Deliveries int    `json:"deliveries"`
	StreamSeq  uint64 `json:"stream_seq"`
	// Time is when it was dead-lettered, OriginalTime when the original was stored.
	Time         time.Time           `json:"time"`
	OriginalTime time.Time           `json:"original_time"`
	Headers      map[string][]string `json:"headers,omitempty"`
	Payload      string              `json:"payload"`
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
}
