package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/ingest"
)

// The raw limits the fleet benchmark measures beside Godwit's figures, on this machine, in the
// same run: what the same nats-server and the same store do with nothing of Godwit around them.
const (
	rawKVConns   = 8                   // TCP connections of the raw KV clients
	rawKVClients = 256                 // concurrent put+get loops over them
	rawKVValue   = 256                 // bytes of each put, about an agent's heartbeat
	rawBatch     = ingest.DefaultBatch // events per InsertEvents call: the ingest's transaction, as bench ingest
)

// rawSettings size the raw measurements; the zero value takes the defaults.
type rawSettings struct {
	kvTime time.Duration // how long the KV loops run; default 3s
	events int           // events of the raw insert; default 50,000
}

func (s rawSettings) withDefaults() rawSettings {
	if s.kvTime == 0 {
		s.kvTime = 3 * time.Second
	}
	if s.events == 0 {
		s.events = 50_000
	}
	return s
}

// rawLimits are the figures of measureRawLimits.
type rawLimits struct {
	KVRoundTrips float64 // KV put then direct get of the same key, per second
	InsertRate   float64 // events per second of store.InsertEvents into a fresh SQLite database
}

// measureRawLimits measures the raw limits in dir. The KV figure comes from a nats-server of
// the build the hub embeds, started here with JetStream on a file store under dir and no
// authentication, and one bucket configured as the hub's (file storage, history 1, direct
// gets): rawKVClients loops, each putting and then reading its own key, over rawKVConns
// connections for s.kvTime. The insert figure is store.InsertEvents of s.events events,
// rawBatch at a time, into a fresh SQLite database under dir, as `godwit bench ingest` times it.
func measureRawLimits(ctx context.Context, dir string, s rawSettings) (rawLimits, error) {
	var r rawLimits
	var err error
	if r.KVRoundTrips, err = rawKV(ctx, filepath.Join(dir, "raw-nats"), s.kvTime); err != nil {
		return r, fmt.Errorf("raw KV round trips: %w", err)
	}
	cfg := IngestConfig{Events: s.events, Batch: rawBatch}
	d, _, _, err := rawInsert(ctx, cfg, sqliteEngine(dir), newEventSource(agentIDs(1000)))
	if err != nil {
		return r, fmt.Errorf("raw insert: %w", err)
	}
	r.InsertRate = rate(s.events, d)
	return r, nil
}

func rawKV(ctx context.Context, storeDir string, d time.Duration) (float64, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: storeDir, NoSigs: true, NoLog: true, DisableJetStreamBanner: true})
	if err != nil {
		return 0, err
	}
	ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(storeDir)
	}()
	if !ns.ReadyForConnections(30 * time.Second) {
		return 0, errors.New("nats-server not ready within 30s")
	}
	conns := make([]*nats.Conn, rawKVConns)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	kvs := make([]jetstream.KeyValue, rawKVConns)
	for i := range conns {
		if conns[i], err = nats.Connect(ns.ClientURL()); err != nil {
			return 0, err
		}
		js, err := jetstream.New(conns[i])
		if err != nil {
			return 0, err
		}
		cfg := jetstream.KeyValueConfig{Bucket: "raw", History: 1, Storage: jetstream.FileStorage}
		if i == 0 {
			kvs[i], err = js.CreateKeyValue(ctx, cfg)
		} else {
			kvs[i], err = js.KeyValue(ctx, "raw")
		}
		if err != nil {
			return 0, err
		}
	}
	value := make([]byte, rawKVValue)
	var trips atomic.Int64
	var failed atomic.Value
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range rawKVClients {
		kv, key := kvs[c%rawKVConns], "k"+strconv.Itoa(c)
		wg.Go(func() {
			for rctx.Err() == nil {
				if _, err := kv.Put(rctx, key, value); err != nil {
					if rctx.Err() == nil {
						failed.Store(err)
					}
					return
				}
				if _, err := kv.Get(rctx, key); err != nil {
					if rctx.Err() == nil {
						failed.Store(err)
					}
					return
				}
				trips.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := failed.Load().(error); ok {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(trips.Load()) / elapsed.Seconds(), nil
}

// natsServerVersion names the nats-server build embedded in this binary.
func natsServerVersion() string { return "nats-server " + server.VERSION }

// printRatios prints Godwit's figures of the rollout beside the raw limits.
func printRatios(out io.Writer, res FleetResult, raw rawLimits) {
	secs := res.Rollout.Seconds()
	reqRate := float64(res.AgentRequests) / secs
	rawReqs := 2 * raw.KVRoundTrips
	ingest := res.EventsInRollout / secs
	fmt.Fprintf(out, "against the raw limits: the agents' NATS requests during the rollout (heartbeat and observed-state puts, "+
		"desired-state reads, event publishes) %.0f/s = %.3f of the raw %.0f requests/s (put+get round trips × 2); events "+
		"ingested during the rollout %.0f/s = %.3f of the raw insert rate %.0f/s\n", reqRate, reqRate/rawReqs, rawReqs, ingest,
		ingest/raw.InsertRate, raw.InsertRate)
}
