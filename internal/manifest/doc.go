// Package manifest reads Godwit's declarative documents, whatever their kind:
//
//	apiVersion: godwit.dev/v1
//	kind: Migration            # or Sweep, ...
//	metadata: {name: pg-15, description: ...}
//	spec: {...}                # the kind's own fields
//
// It owns everything the kinds have in common, so that they cannot drift apart:
//
//   - Decoding (Kind.Decode): exactly one YAML or JSON document within the kind's size limit;
//     apiVersion and kind checked first, alone; then every field read strictly: unknown and
//     repeated keys, aliases (*ref), tags other than the core schema's and values of the wrong
//     shape are errors. Null is the same as absent: the destination keeps its default.
//   - Errors: each a *fault.FieldError (so errors.Is(err, fault.ErrInvalid)) naming the field
//     path (spec.steps[1].run) and its line; at most MaxErrors, joined. Decode returns the Lines
//     it read, and a Report built on them gives validation errors lines too: a missing field
//     points at the mapping that should hold it.
//   - Shared values and rules: names (a DNS label), durations (Go durations plus whole days, 7d),
//     label selectors with Kubernetes semantics, enums, text that must round-trip, commands.
//   - Canonical hashing (Hash): SHA-256 of the kind's canonical form as JSON, so the same spec
//     written differently has the same hash; Encode renders that form as YAML.
//   - Dispatch by kind (KindOf, Split, Dispatch): one document or a stream of several, each to
//     the handler of its kind.
//
// # Adding a kind
//
// A kind declares its fields and its rules, and nothing else (Example_kind in example_test.go
// runs a cut-down FailoverGroup):
//
//	var groupKind = manifest.Kind{Name: "FailoverGroup", MaxBytes: 64 << 10}
//
//	func Parse(data []byte) (*Group, error) {
//		g := &Group{FailureThreshold: 3} // defaults first: an absent or null field keeps them
//		lines, err := groupKind.Decode(data, &g.Metadata,
//			manifest.Selector("members", &g.Members),
//			manifest.Duration("heartbeatTimeout", &g.HeartbeatTimeout),
//			manifest.Int("failureThreshold", &g.FailureThreshold),
//			manifest.Object("onFence", manifest.String("command", &g.OnFence.Command),
//				manifest.Duration("timeout", &g.OnFence.Timeout)),
//		)
//		if err != nil {
//			return nil, err
//		}
//		g.APIVersion, g.Kind, g.lines = manifest.APIVersion, groupKind.Name, lines
//		return g, nil
//	}
//
//	func (g *Group) Validate() error {
//		r := manifest.Report{Lines: g.lines} // errors get the line of their field
//		r.Header(groupKind.Name, g.APIVersion, g.Kind, g.Metadata)
//		r.Selector("spec.members", g.Members)
//		if g.OnFence.Timeout <= 0 {
//			r.Fail("spec.onFence.timeout", "is required: a hook that hangs is killed at its timeout")
//		}
//		return r.Err()
//	}
//
// A value with a shape of the kind's own (a percentage; agent ids or a selector) is a Read
// field whose function takes the Value apart with Scalar, Int, Mapping or Each and calls Fail.
// Hash is manifest.Hash of a struct holding the kind's canonical form: defaults written out,
// durations in FormatDuration, the selector's Canonical. Last, the kind gets an entry in the
// handlers that Dispatch is given.
package manifest
