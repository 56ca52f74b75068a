package store

// SweepStore holds sweeps (scheduled fleet-wide checks) and their runs.
type SweepStore interface{}
