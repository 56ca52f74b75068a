package lease

import (
	"errors"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease/leasetest"
)

func TestDefaultTimingIsValid(t *testing.T) {
	d := DefaultTiming()
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultTiming().Validate() = %v", err)
	}
	if got := d.Watchdog(); got != 8*time.Second {
		t.Errorf("Watchdog() = %s, want 8s", got)
	}
}

// Each violation is refused with an invalid error naming the field, and the rule names every
// field it involves.
func TestValidateNamesTheFields(t *testing.T) {
	const s = time.Second
	ok := Timing{TTL: 10 * s, RenewInterval: 2 * s, CallTimeout: 2 * s, Margin: 2 * s, RecoverAfter: 3}
	cases := []struct {
		name   string
		change func(*Timing)
		fields []string // every one must be named
		words  string   // and the message must say this
	}{
		{"ttl zero", func(t *Timing) { t.TTL = 0 }, []string{"ttl"}, "positive"},
		{"renew negative", func(t *Timing) { t.RenewInterval = -s }, []string{"renewInterval"}, "positive"},
		{"call timeout zero", func(t *Timing) { t.CallTimeout = 0 }, []string{"callTimeout"}, "positive"},
		{"margin zero", func(t *Timing) { t.Margin = 0 }, []string{"margin"}, "positive"},
		{"recover zero", func(t *Timing) { t.RecoverAfter = 0 }, []string{"recoverAfter"}, "at least 1"},
		{"call longer than interval", func(t *Timing) { t.CallTimeout = 3 * s; t.TTL = 20 * s }, []string{"callTimeout", "renewInterval"}, "before the next one starts"},
		{"margin too small", func(t *Timing) { t.Margin = 100 * time.Millisecond }, []string{"margin", "ttl"}, "at least ttl/20"},
		{"rule: ttl too short", func(t *Timing) { t.TTL = 7 * s }, []string{"ttl", "renewInterval", "callTimeout", "margin"}, "= 8s, got 7s"},
		{"rule: interval too long", func(t *Timing) { t.RenewInterval = 4 * s }, []string{"ttl", "renewInterval"}, "= 12s, got 10s"},
		{"rule: margin too large", func(t *Timing) { t.Margin = 5 * s }, []string{"ttl", "margin"}, "= 11s, got 10s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tm := ok
			tc.change(&tm)
			err := tm.Validate()
			if err == nil {
				t.Fatalf("Validate(%s) = nil", tm)
			}
			if !errors.Is(err, fault.ErrInvalid) {
				t.Errorf("Validate() = %v, not fault.ErrInvalid", err)
			}
			var fe *fault.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, no *fault.FieldError", err)
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("Validate() = %q, does not name %q", err, f)
				}
			}
			if !strings.Contains(err.Error(), tc.words) {
				t.Errorf("Validate() = %q, want it to say %q", err, tc.words)
			}
		})
	}
	// Exactly at the rule's bound is allowed.
	edge := Timing{TTL: 8 * s, RenewInterval: 2 * s, CallTimeout: 2 * s, Margin: 2 * s, RecoverAfter: 1}
	if err := edge.Validate(); err != nil {
		t.Errorf("Validate(%s) = %v, want nil: 2×2s + 2s + 2s = 8s", edge, err)
	}
}

// ValidateNamed lets the hub name its settings.
func TestValidateNamed(t *testing.T) {
	tm := DefaultTiming()
	tm.TTL = time.Second
	err := tm.ValidateNamed(func(f string) string { return "lease." + f + " (--lease-" + f + ")" })
	var fe *fault.FieldError
	if !errors.As(err, &fe) || fe.Field != "lease.ttl (--lease-ttl)" {
		t.Fatalf("ValidateNamed: %v (field %+v)", err, fe)
	}
	if !strings.Contains(err.Error(), "lease.renewInterval (--lease-renewInterval)") {
		t.Errorf("ValidateNamed: %q does not name the other settings the same way", err)
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	for _, tc := range []struct{ name, key, field string }{
		{"hub lease", "", "Name"}, {"x", "a b", "Key"}, {"x", ".hub", "Key"}, {"x", "hub.", "Key"}, {"x", "h*", "Key"},
	} {
		_, err := New(Config{Name: tc.name, Key: tc.key, Holder: "a", KV: leasetest.NewFaultKV(nil, nil), Timing: DefaultTiming()})
		var fe *fault.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("New(name %q, key %q) = %v, want an error naming %s", tc.name, tc.key, err, tc.field)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := New(Config{Timing: Timing{}})
	if err == nil || !errors.Is(err, fault.ErrInvalid) {
		t.Fatalf("New(zero) = %v, want invalid", err)
	}
	for _, f := range []string{"Name", "Holder", "KV", "ttl", "recoverAfter"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("New(zero) = %q, does not name %s", err, f)
		}
	}
}
