package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/bus"
)

// The benchmarks run end to end on a small scale and print their figures. Nothing is asserted on
// speed: only that the runs complete and say what they measured.

func TestIngestRuns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// No raw batch: raw inserts as many per call as the ingest writes per transaction.
	res, err := RunIngest(ctx, IngestConfig{Events: 300, Agents: 20, IngestBatch: 100,
		Engines: []string{EngineSQLite}, TempDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("RunIngest: %v\n%s", err, out.String())
	}
	if len(res) != 1 || res[0].Engine != EngineSQLite || res[0].EndToEnd <= 0 || res[0].Backlog <= 0 || res[0].Raw <= 0 {
		t.Fatalf("results %+v", res)
	}
	if res[0].RawBatch != 100 {
		t.Errorf("raw batch %d, want the ingest batch (100)", res[0].RawBatch)
	}
	for _, want := range []string{"one hub connection", "LIVE EV/S", "BACKLOG EV/S", "BACKLOG/RAW", "sqlite backlog:", "sqlite raw: all inserted after",
		"100 per call"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFleetRunsMultiplexed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	// Child processes need the godwit binary, which a test is not: the hub runs in process. Three
	// relay connections carry 90 agents, each with its own credentials.
	res, err := RunFleet(ctx, FleetConfig{Agents: 90, Steps: 2, Connections: 3, Hub: HubInProcess,
		Heartbeat: 500 * time.Millisecond, TempDir: t.TempDir(), Out: &out,
		raw: rawSettings{kvTime: 100 * time.Millisecond, events: 1000}})
	if err != nil {
		t.Fatalf("RunFleet: %v\n%s", err, out.String())
	}
	if res.Rollout <= 0 || res.EventsDrained < float64(90*eventsPerAgent(2)) || res.PeakRSS <= 0 || res.AgentRequests <= 0 ||
		res.PeakHeapInUse <= 0 {
		t.Fatalf("results %+v\n%s", res, out.String())
	}
	for _, want := range []string{"multiplexed: 90 agents over 3 connections, each agent with its own credentials' subjects",
		"INCLUDES the simulated agents", "applied → succeeded", "KV put+get round trips/s", "of the raw insert rate",
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
		{"too many for one each", FleetConfig{Agents: 30000, Hub: HubAuto}, 20000, connPlan{relays: 1000}, false},
		{"100k multiplexed", FleetConfig{Agents: 100000, Hub: HubChild}, 20000, connPlan{relays: 3334}, false},
		{"asked to multiplex", FleetConfig{Agents: 1000, Connections: 40, Hub: HubAuto}, 20000, connPlan{relays: 40}, false},
		{"in process halves the budget", FleetConfig{Agents: 10000, Hub: HubInProcess}, 20000,
			connPlan{inProcess: true, relays: 334}, false},
		{"too few connections to carry them", FleetConfig{Agents: 1000, Connections: 33, Hub: HubAuto}, 20000, connPlan{}, true},
		{"one each does not fit", FleetConfig{Agents: 30000, Connections: 30000, Hub: HubAuto}, 20000, connPlan{}, true},
		{"not even the relays fit", FleetConfig{Agents: 100000, Hub: HubAuto}, 2000, connPlan{}, true},
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

// TestRelayCarries: the relays carry every multiplexed agent exactly once, at most
// bus.MaxRelayAgents each.
func TestRelayCarries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ own, n, relays int }{{0, 300, 10}, {0, 100000, 3334}, {5, 65, 3}, {0, 7, 7}} {
		next := tc.own
		for k := range tc.relays {
			from, to := relayCarries(tc.own, tc.n, tc.relays, k)
			if from != next || to <= from || to-from > bus.MaxRelayAgents {
				t.Fatalf("%+v: relay %d carries [%d, %d), want from %d, 1 to %d agents", tc, k, from, to, next, bus.MaxRelayAgents)
			}
			next = to
		}
		if next != tc.n {
			t.Fatalf("%+v: the relays carry up to %d, want %d", tc, next, tc.n)
		}
	}
}
