package store

// UIStore holds what the web UI needs beyond the API's queries: sessions and paged, filtered
// listings that stay fast on large fleets.
type UIStore interface{}
