// Package fault holds the domain error sentinels shared by the store, the API and the CLI.
//
// Code anywhere in Godwit wraps one of these with context (fmt.Errorf("enroll: %w", fault.ErrForbidden));
// the API maps them to HTTP status codes in exactly one function (api.statusOf), and the CLI maps
// them back from the API's JSON error codes.
package fault

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels. Their Error() text doubles as the stable machine-readable code in API responses.
var (
	ErrNotFound        = errors.New("not_found")
	ErrConflict        = errors.New("conflict")
	ErrInvalid         = errors.New("invalid")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrTooLarge        = errors.New("too_large")
	ErrUnavailable     = errors.New("unavailable")
	// ErrRateLimited is returned to a client address that failed to authenticate too often; it
	// may try again after a wait (RateLimited carries how long).
	ErrRateLimited = errors.New("rate_limited")
	// ErrFenced is returned when a write carries a leadership epoch that is no longer current.
	ErrFenced = errors.New("fenced")
)

// All lists every sentinel, so clients can turn an API error code back into the sentinel.
var All = []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnauthenticated, ErrForbidden, ErrTooLarge, ErrUnavailable, ErrFenced, ErrRateLimited}

// Code returns the API error code for err: the first sentinel it wraps, or "internal".
func Code(err error) string {
	for _, s := range All {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "internal"
}

// FromCode returns the sentinel for an API error code, or nil when the code is unknown.
func FromCode(code string) error {
	for _, s := range All {
		if s.Error() == code {
			return s
		}
	}
	return nil
}

// FieldError is a validation error that names the offending field (and, for specs, the line).
type FieldError struct {
	Field   string
	Line    int
	Message string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", e.Field, e.Line, e.Message)
	}
	return e.Field + ": " + e.Message
}

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Invalid builds a FieldError.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// RateLimited is an ErrRateLimited that says when the client may try again.
type RateLimited struct {
	RetryAfter time.Duration
}

func (e *RateLimited) Error() string {
	return fmt.Sprintf("too many failed attempts from this address; try again in %s", e.RetryAfter.Round(time.Second))
}

// Unwrap makes every RateLimited an ErrRateLimited.
func (e *RateLimited) Unwrap() error { return ErrRateLimited }
