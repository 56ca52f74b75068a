package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"go.yaml.in/yaml/v3"
)

// Hash returns the hex SHA-256 of a kind's canonical form: a struct of plain values (strings,
// numbers, maps of strings, slices, LabelSelector.Canonical) that holds every field with its
// default filled in and sets in a fixed order. So the same spec written differently (formatting,
// comments, key order, defaults written or left out) has the same hash, and a changed spec a new
// one; applying a spec whose hash is stored already is a no-op.
//
// The hashed bytes are the form as JSON (encoding/json, fields in declaration order, map keys
// sorted), not YAML, so a hash does not move if the YAML library changes how it formats. Hashes
// are stored: a kind must not change its canonical form's JSON without a note in the release
// notes.
func Hash(canonical any) string {
	b, err := json.Marshal(canonical)
	if err != nil {
		// A canonical form holds plain values only: this is a bug in the kind.
		panic("manifest: canonical form does not marshal: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Encode renders a kind's canonical form as YAML, two spaces of indentation, for storage and
// `godwit get -o yaml`.
func Encode(canonical any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(canonical); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
