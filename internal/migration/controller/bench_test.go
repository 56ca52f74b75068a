package controller

import (
	"context"
	"testing"
	"time"

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
