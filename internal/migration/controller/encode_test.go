package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// oldDocument is an agent's desired document as every pass rendered it before documents were
// made of their entries' encodings: a DesiredState of the agent's requests by migration,
// marshalled whole.
func oldDocument(agentID string, epoch int64, as []wire.DesiredAssignment) []byte {
	as = slices.Clone(as)
	slices.SortFunc(as, func(a, b wire.DesiredAssignment) int { return strings.Compare(a.Migration, b.Migration) })
	if as == nil {
		as = []wire.DesiredAssignment{}
	}
	doc, err := json.Marshal(wire.DesiredState{AgentID: agentID, Epoch: epoch, Assignments: as})
	if err != nil {
		panic(err)
	}
	return doc
}

// checkEncoded fails unless the document made of the entries' encodings, with and without them
// encoded beforehand, is oldDocument's byte for byte.
func checkEncoded(t *testing.T, agentID string, epoch int64, as []wire.DesiredAssignment) {
	t.Helper()
	want := oldDocument(agentID, epoch, as)
	var es, bare []entry
	for _, a := range as {
		enc, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{DesiredAssignment: a, encoded: enc})
		bare = append(bare, entry{DesiredAssignment: a})
	}
	for _, got := range [][]byte{encodeDocument(agentID, epoch, es), encodeDocument(agentID, epoch, bare), first(fit(agentID, epoch, es, 0))} {
		if string(got) != string(want) {
			t.Fatalf("document of %q, epoch %d:\n got %s\nwant %s", agentID, epoch, got, want)
		}
	}
}

func first(doc []byte, _ []entry) []byte { return doc }

func TestEncodedDocumentIsMarshalled(t *testing.T) {
	sp, err := spec.Parse([]byte("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: x}\nspec:\n  toVersion: \"\\u2028<&>\"\n  fromVersion: \"\\\"\"\n  steps:\n    - {name: a, run: \"\\t\\u0001&<>\\\"\\\\\", rollback: é, verify: \"\\u00ff\", timeout: 90s}\n    - {name: b, run: \"true\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	apply := wire.DesiredAssignment{Migration: "m-b", Attempt: 1, Generation: 1, Action: wire.ActionApply, FromVersion: sp.Spec.FromVersion,
		ToVersion: sp.Spec.ToVersion, Steps: stepSpecs(sp), Signature: "sig<&>"}
	rollback := apply
	rollback.Migration, rollback.Action, rollback.Attempt, rollback.Generation = "m-a", wire.ActionRollback, math.MaxInt32, 7
	cancel := wire.DesiredAssignment{Migration: "m-c\u2028", Attempt: 3, Generation: 2, Action: wire.ActionCancel}
	sets := [][]wire.DesiredAssignment{nil, {apply}, {cancel}, {apply, rollback, cancel}, {cancel, rollback}}
	ids := []string{"0196a000-0000-7000-8000-000000000001", "", "a<b>&c", "quote\"back\\slash", "tab\tnl\n", "é\u2028\x7f\xff", " ~"}
	for _, c := range "<>&\"\\\x00\x1f\x7f\u00e9\u2028" {
		ids = append(ids, "agent"+string(c))
	}
	ids = append(ids, "agent\xff")
	for _, id := range ids {
		for _, epoch := range []int64{0, 1, -3, math.MaxInt64, math.MinInt64} {
			for _, as := range sets {
				checkEncoded(t, id, epoch, as)
			}
		}
	}
}

func FuzzEncodedDocumentIsMarshalled(f *testing.F) {
	f.Add("0196a000-0000-7000-8000-000000000001", int64(5), "m1", "true", "m0", 2)
	f.Add("<&>", int64(-1), "\u2028", "\x00\"\\", "", 0)
	f.Fuzz(func(t *testing.T, agentID string, epoch int64, m1, run, m2 string, generation int) {
		a := wire.DesiredAssignment{Migration: m1, Attempt: 1, Generation: generation, Action: wire.ActionApply,
			Steps: []wire.StepSpec{{Name: run, Run: run, Rollback: run, TimeoutMS: int64(generation)}}}
		b := wire.DesiredAssignment{Migration: m2, Attempt: 2, Generation: 1, Action: wire.ActionCancel, ToVersion: run}
		checkEncoded(t, agentID, epoch, []wire.DesiredAssignment{a, b})
	})
}

// A pass's documents are the documents marshalled whole from the stored assignments and the
// specs: the agents' first requests of two migrations, then the cancels of one of them.
func TestPassDocumentsAreMarshalled(t *testing.T) {
	b := setup(t, 5)
	ctx := context.Background()
	b.apply(t, "m2", "    batchSize: 100%")
	if _, err := b.c.Apply(ctx, []byte(fmt.Sprintf(threeSteps, "m1")), false); err != nil {
		t.Fatal(err)
	}
	check := func(docs map[string][]byte) {
		t.Helper()
		ms, err := b.store.ListMigrations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]wire.DesiredAssignment{}
		for _, m := range ms {
			sp, err := spec.Parse([]byte(m.Spec))
			if err != nil {
				t.Fatal(err)
			}
			as, err := b.store.ListAssignments(ctx, m.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range latestOf(as) {
				if !wanted(&a) {
					continue
				}
				d := wire.DesiredAssignment{Migration: a.Migration, Attempt: a.Attempt, Generation: a.Generation, Action: a.Action,
					FromVersion: sp.Spec.FromVersion, ToVersion: sp.Spec.ToVersion}
				if a.Action != wire.ActionCancel {
					d.Steps, d.Signature = sp.StepSpecs(), sp.Spec.Signature
				}
				want[a.AgentID] = append(want[a.AgentID], d)
			}
		}
		b.c.mu.Lock()
		epoch := b.c.epoch
		b.c.mu.Unlock()
		if len(docs) != len(b.agents) {
			t.Fatalf("%d documents, want %d", len(docs), len(b.agents))
		}
		for _, a := range b.agents {
			if w := oldDocument(a.ID, epoch, want[a.ID]); string(docs[a.ID]) != string(w) {
				t.Errorf("%s:\n got %s\nwant %s", a.Name, docs[a.ID], w)
			}
		}
	}
	docs, err := b.c.decide(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(docs)
	if _, err := b.c.Act(ctx, "m2", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	if docs, err = b.c.decide(ctx); err != nil {
		t.Fatal(err)
	}
	check(docs)
	if !strings.Contains(string(docs[b.agents[0].ID]), `"action":"cancel"`) {
		t.Fatalf("no cancel after the abort: %s", docs[b.agents[0].ID])
	}
}
