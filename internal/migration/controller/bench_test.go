package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/wire"
)

// BenchmarkPass is a pass over a running migration of 10,000 agents at work, in which 10 of
// them reported since the last pass, with a second or a tenth of one between passes (passes run
// back to back while reports arrive; the time between them is what active time counts).
func BenchmarkPass(b *testing.B) {
	const n, k = 10000, 10
	bd := setup(b, n)
	bd.apply(b, "m1", "    batchSize: 100%")
	ctx := context.Background()
	bd.pass(b) // dispatches every agent
	report := func(i int, st string) {
		bd.c.ObserveForTest(wire.ObservedState{AgentID: bd.agents[i].ID, Assignments: []wire.ObservedAssignment{{
			Migration: "m1", Attempt: 1, Generation: 1, Action: wire.ActionApply, State: st, StepName: "one", Applied: []int{0}}}})
	}
	for i := range n {
		report(i, aApplying)
	}
	bd.pass(b)
	states := []string{aVerifying, aApplying}
	next := 0
	for _, gap := range []time.Duration{time.Second, 100 * time.Millisecond} {
		b.Run("gap="+gap.String(), func(b *testing.B) {
			for range b.N {
				for range k {
					report(next%n, states[next/n%2])
					next++
				}
				bd.clock.Add(gap)
				if err := bd.c.Pass(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// threeSteps is a migration of three steps that change nothing, at 100% batch.
const threeSteps = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: %s
spec:
  toVersion: "2"
  selector:
    matchLabels: {role: db}
  steps:
    - name: one
      run: "true"
      rollback: "true"
    - name: two
      run: "true"
      rollback: "true"
    - name: three
      run: "true"
  rollout:
    batchSize: 100%%
  timeouts:
    assignment: 1h
`

// BenchmarkFirstPass is the first pass after a migration of three steps is applied to 10,000
// reachable agents at 100% batch: it starts the migration, dispatches every agent (a save of
// 10,000 assignments) and renders every agent's desired document. Nothing reaches an agent
// before it ends. It measures decide, the pass up to the documents; their puts are not counted.
// Each iteration deletes the migration of the one before and applies a new one, off the clock.
func BenchmarkFirstPass(b *testing.B) {
	b.Run("store=sqlite", func(b *testing.B) { benchFirstPass(b, setup(b, firstPassAgents)) })
	b.Run("store=postgres", func(b *testing.B) {
		st, err := postgres.Open(context.Background(), pgtest.DSN(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		benchFirstPass(b, setupOn(b, firstPassAgents, st))
	})
}

const firstPassAgents = 10000

// benchFirstPass runs the measured loop in a sub-benchmark of its own, so that the fixture is
// built once.
func benchFirstPass(b *testing.B, bd *bundle) {
	ctx := context.Background()
	applied := 0
	b.Run(fmt.Sprintf("agents=%d", len(bd.agents)), func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if applied > 0 {
				name := fmt.Sprintf("m%d", applied)
				m, err := bd.store.GetMigration(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				if err := bd.store.DeleteMigration(ctx, name, m.Version, bd.clock.Now()); err != nil {
					b.Fatal(err)
				}
			}
			applied++
			name := fmt.Sprintf("m%d", applied)
			if _, err := bd.c.Apply(ctx, []byte(fmt.Sprintf(threeSteps, name)), false); err != nil {
				b.Fatal(err)
			}
			bd.clock.Add(time.Second)
			b.StartTimer()
			docs, err := bd.c.decide(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(docs) != len(bd.agents) || docs[bd.agents[0].ID] == nil {
				b.Fatalf("%d documents rendered, want %d", len(docs), len(bd.agents))
			}
		}
	})
}
