package controller

import (
	"context"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// BenchmarkPass is a pass over a running migration of 10,000 agents at work, in which a few of
// them reported since the last pass and a second of active time went by.
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
	b.ResetTimer()
	for it := range b.N {
		for j := range k {
			report((it*k+j)%n, states[it/(n/k)%2])
		}
		bd.clock.Add(time.Second)
		if err := bd.c.Pass(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
