// Package spec is the declarative Migration spec: its typed model, its fields and defaults, its
// semantic rules and its canonical form. Reading the YAML strictly, the errors' field paths and
// lines, names, durations, label selectors and hashing belong to package manifest, which every
// kind shares; this package declares only what is a Migration's own.
//
// A spec goes through three steps, each pure (no I/O):
//
//	m, err := spec.Parse(data) // syntax: YAML, known fields, types, kind/apiVersion; fills defaults
//	err = m.Validate()         // semantics: names, steps, ranges, enums, selector operators
//	h := m.Hash()              // SHA-256 of the canonical form: same spec ⇒ same hash
//
// Every error from Parse and Validate is a *fault.FieldError (so errors.Is(err, fault.ErrInvalid))
// whose Field is a path such as spec.steps[1].run and whose Line is the YAML line the value (or,
// for a missing field, its closest present parent) came from. Several errors are joined with
// errors.Join (at most manifest.MaxErrors); errors.As finds the first.
//
// Decisions worth knowing (see also the field docs on the types):
//
//   - A null value (`timeout:` or `timeout: ~`) is the same as leaving the field out, so it takes
//     the default. An explicit zero is not a null: `timeout: 0s` is refused by Validate.
//   - Anchors may be declared but aliases (*ref) are refused: they make line numbers point at the
//     anchor, and expanding them is the classic YAML size bomb.
//   - Durations are Go durations (30s, 5m, 1h30m) plus a whole-day form (7d).
//   - JSON is YAML, so a JSON body parses too (with line numbers).
//   - Hash covers every field, description included, after defaults are filled in and after the
//     selector is put in a canonical order (expressions sorted, values sorted and deduplicated). It
//     ignores formatting, comments, key order and whether a default was written out. The hash of
//     a stored migration must not move: TestHashGolden pins it.
package spec
