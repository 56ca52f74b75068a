// Package examples holds sample specs; `godwit demo` runs demo-migration.yaml.
package examples

import _ "embed"

// DemoMigration is the migration `godwit demo` applies.
//
//go:embed demo-migration.yaml
var DemoMigration []byte
