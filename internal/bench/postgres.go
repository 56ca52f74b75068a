package bench

import "godwit.dev/godwit/internal/store/postgres"

// DefaultPostgres is the server the ingest benchmark tries when --postgres is not given: the
// local one the tests use.
const DefaultPostgres = postgres.LocalServer
