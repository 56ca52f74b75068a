// Package config holds the hub's and the agent's configuration and the one loader both use:
// defaults → YAML file → environment (GODWIT_…) → flags, then Validate, before anything starts.
//
// Each setting is declared once, as a struct field with a `yaml` key (Kubernetes-style camelCase)
// and a `flag` name; its environment variable is GODWIT_ + the flag name in upper snake case
// (--nats-listen ⇔ GODWIT_NATS_LISTEN). Errors name the setting the way the user wrote it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/fault"
)

// Duration is a time.Duration that reads "90s" / "4h" from YAML, env and flags.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 5m, 4h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// field is one leaf setting found by walking a config struct.
type field struct {
	yamlPath string // e.g. liveness.grace
	flag     string // e.g. liveness-grace
	usage    string
	value    reflect.Value
}

func (f field) env() string {
	return "GODWIT_" + strings.ToUpper(strings.ReplaceAll(f.flag, "-", "_"))
}

func fields(cfg any) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			key := strings.Split(sf.Tag.Get("yaml"), ",")[0]
			if key == "" || key == "-" {
				continue
			}
			path := key
			if prefix != "" {
				path = prefix + "." + key
			}
			fv := v.Field(i)
			if sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeOf(Duration(0)) {
				walk(fv, path)
				continue
			}
			out = append(out, field{yamlPath: path, flag: sf.Tag.Get("flag"), usage: sf.Tag.Get("usage"), value: fv})
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	return out
}

// set parses s into the field's value.
func (f field) set(s string) error {
	v := f.value
	switch {
	case v.Type() == reflect.TypeOf(Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (use e.g. 30s, 5m, 4h)", s)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

// Load fills cfg (already holding defaults) from the YAML file at path (if path is not empty),
// then the environment, then the flags the user set. It does not validate.
func Load(cfg any, path string, flags *pflag.FlagSet) error {
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("config file %s: %w: %w", path, err, fault.ErrInvalid)
		}
	}
	fs := fields(cfg)
	for _, f := range fs {
		if f.flag == "" {
			continue
		}
		if s, ok := os.LookupEnv(f.env()); ok {
			if err := f.set(s); err != nil {
				return fault.Invalid(f.env(), "%v", err)
			}
		}
	}
	if flags == nil {
		return nil
	}
	byFlag := map[string]field{}
	for _, f := range fs {
		if f.flag != "" {
			byFlag[f.flag] = f
		}
	}
	var err error
	flags.Visit(func(fl *pflag.Flag) {
		f, ok := byFlag[fl.Name]
		if !ok || err != nil {
			return
		}
		s := fl.Value.String()
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			s = strings.Join(sv.GetSlice(), ",")
		}
		if e := f.set(s); e != nil {
			err = fault.Invalid("--"+fl.Name, "%v", e)
		}
	})
	return err
}

// Describe returns "yaml.path (--flag, GODWIT_ENV)" for error messages and docs.
func Describe(cfg any, yamlPath string) string {
	for _, f := range fields(cfg) {
		if f.yamlPath == yamlPath && f.flag != "" {
			return fmt.Sprintf("%s (--%s, %s)", f.yamlPath, f.flag, f.env())
		}
	}
	return yamlPath
}

// RegisterFlags adds a flag for every setting of cfg that has one, defaulting to cfg's current
// value. Load later applies only the flags the user set.
func RegisterFlags(fs *pflag.FlagSet, cfg any) {
	for _, f := range fields(cfg) {
		if f.flag == "" || fs.Lookup(f.flag) != nil {
			continue
		}
		usage := f.usage + " (" + f.env() + ")"
		if f.value.Kind() == reflect.Slice {
			fs.StringArray(f.flag, nil, usage)
			continue
		}
		if f.value.Kind() == reflect.Bool {
			fs.Bool(f.flag, f.value.Bool(), usage)
			continue
		}
		def := fmt.Sprint(f.value.Interface())
		if f.value.Kind() == reflect.Int || f.value.Kind() == reflect.Int64 {
			if f.value.Type() != reflect.TypeOf(Duration(0)) {
				def = strconv.FormatInt(f.value.Int(), 10)
			}
		}
		fs.String(f.flag, def, usage)
	}
}
