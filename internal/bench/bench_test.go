package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The benchmarks run end to end on a small scale and print their figures. Nothing is asserted on
// speed: only that the runs complete and say what they measured.

func TestIngestRuns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := RunIngest(ctx, IngestConfig{Events: 300, Agents: 20, Batch: 50, IngestBatch: 100,
		Engines: []string{EngineSQLite}, TempDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("RunIngest: %v\n%s", err, out.String())
	}
	if len(res) != 1 || res[0].Engine != EngineSQLite || res[0].EndToEnd <= 0 || res[0].Backlog <= 0 || res[0].Raw <= 0 {
		t.Fatalf("results %+v", res)
	}
	for _, want := range []string{"one hub connection", "LIVE EV/S", "BACKLOG EV/S", "BACKLOG/RAW", "sqlite backlog:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFleetRunsMultiplexed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// Child processes need the godwit binary, which a test is not: the hub runs in process, and
	// two connections of its own user carry the agents.
	res, err := RunFleet(ctx, FleetConfig{Agents: 6, Steps: 2, Connections: 2, Heartbeat: 200 * time.Millisecond,
		TempDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("RunFleet: %v\n%s", err, out.String())
	}
	if res.Rollout <= 0 || res.EventsDrained < float64(6*eventsPerAgent(2)) || res.PeakRSS <= 0 || res.PeakHeapInUse <= 0 {
		t.Fatalf("results %+v\n%s", res, out.String())
	}
	for _, want := range []string{"MULTIPLEXED over 2 connections", "INCLUDES the simulated agents", "applied → succeeded",
		"KiB per agent", "hub heap profile once every agent event was stored"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPlanConnections(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		cfg     FleetConfig
		limit   uint64
		want    connPlan
		wantErr bool
	}{
		{"fits as a child", FleetConfig{Agents: 1000, Hub: HubAuto}, 20000, connPlan{own: 1000}, false},
		{"10k fit as a child", FleetConfig{Agents: 10000, Hub: HubAuto}, 20000, connPlan{own: 10000}, false},
		{"too many for a child", FleetConfig{Agents: 30000, Hub: HubAuto}, 20000,
			connPlan{inProcess: true, own: 9744, shared: 82}, false},
		{"asked to multiplex", FleetConfig{Agents: 1000, Connections: 10, Hub: HubAuto}, 20000,
			connPlan{inProcess: true, shared: 10}, false},
		{"in process halves the budget", FleetConfig{Agents: 10000, Hub: HubInProcess}, 20000,
			connPlan{inProcess: true, own: 9744, shared: 2}, false},
		{"a child cannot multiplex", FleetConfig{Agents: 30000, Hub: HubChild}, 20000, connPlan{}, true},
		{"one each does not fit", FleetConfig{Agents: 30000, Connections: 30000, Hub: HubAuto}, 20000, connPlan{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planConnections(tc.cfg, tc.limit)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}
