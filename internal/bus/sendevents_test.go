package bus_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/wire"
)

// A server whose max payload is below wire.MaxBatchBytes: SendEvents splits what it is given into
// messages the server takes, in order, and every event arrives once.
func TestSendEventsWithinASmallMaxPayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxPayload, eventSize, events, messages int
	}{
		{96 << 10, 40 << 10, 5, 3},              // two a batch, then the last alone
		{70 << 10, 60 << 10, 3, 3},              // each alone
		{wire.MaxEventBytes + 2048, 300, 64, 1}, // 64 small events fit in one
	} {
		t.Run(fmt.Sprintf("max_payload %d", tc.maxPayload), func(t *testing.T) {
			t.Parallel()
			url := startConfigured(t, fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: %d\njetstream: {store_dir: %q}\n",
				tc.maxPayload, t.TempDir()))
			nc, err := nats.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: wire.StreamEvents, Subjects: []string{"godwit.events.>"}})
			if err != nil {
				t.Fatal(err)
			}
			agent := uuid.NewString()
			var ids []string
			var payloads [][]byte
			for n := range tc.events {
				ids = append(ids, uuid.NewString())
				p := fmt.Appendf(nil, `{"n":%d,"pad":"`, n)
				p = append(p, strings.Repeat("x", tc.eventSize-len(p)-2)...)
				payloads = append(payloads, append(p, `"}`...))
			}
			msgs, err := bus.SendEvents(ctx, nc, agent, ids, payloads)
			if err != nil || msgs != tc.messages {
				t.Fatalf("SendEvents = %d messages, %v; want %d", msgs, err, tc.messages)
			}
			var got [][]byte
			for seq := uint64(1); seq <= uint64(tc.messages); seq++ {
				m, err := st.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				if c := m.Header.Get(wire.HeaderEvents); c != "" {
					parts, err := wire.SplitEventBatch(c, m.Data)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, parts...)
				} else {
					got = append(got, m.Data)
				}
			}
			if len(got) != len(payloads) {
				t.Fatalf("%d events in the stream, want %d", len(got), len(payloads))
			}
			for n := range got {
				if !bytes.Equal(got[n], payloads[n]) {
					t.Fatalf("event %d out of order or changed", n)
				}
			}
		})
	}
}
