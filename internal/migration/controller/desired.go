package controller

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/wire"
)

// headerRoom is what a desired document leaves of the NATS max payload for the message's
// headers: the document itself must fit in the rest.
const headerRoom = 1 << 10

// entry is one assignment of an agent's desired document, with what decides which goes first
// when the document is too large.
type entry struct {
	wire.DesiredAssignment
	created time.Time // the migration's
	encoded []byte    // DesiredAssignment as json.Marshal encodes it; nil: not encoded yet
}

// budget is the largest desired document the connected server takes, or 0 when it is not known
// (no MaxPayload, or not connected).
func (c *Controller) budget() int {
	if c.cfg.MaxPayload == nil {
		return 0
	}
	mp := c.cfg.MaxPayload()
	if mp <= 0 {
		return 0
	}
	return int(max(mp-headerRoom, 1))
}

// documentSize is the size of the largest desired document one assignment of sp can make: the
// one an agent gets when it has nothing else to do, with the widest numbers the document can
// hold.
func documentSize(name string, sp *spec.Migration) int {
	doc, _ := json.Marshal(wire.DesiredState{AgentID: strings.Repeat("0", 36), Epoch: math.MaxInt64,
		Assignments: []wire.DesiredAssignment{{Migration: name, Attempt: math.MaxInt32, Generation: math.MaxInt32,
			Action: wire.ActionRollback, FromVersion: sp.Spec.FromVersion, ToVersion: sp.Spec.ToVersion, Steps: stepSpecs(sp),
			Signature: sp.Spec.Signature}}})
	return len(doc)
}

// deliverable refuses a spec whose desired document would not fit in one NATS message of the
// connected server: no agent could ever receive it.
func (c *Controller) deliverable(sp *spec.Migration) error {
	limit := c.budget()
	if limit == 0 {
		return nil
	}
	if n := documentSize(sp.Metadata.Name, sp); n > limit {
		return fmt.Errorf("its desired document for an agent would be %d bytes; the NATS server's max payload is %d bytes (%d KiB kept for headers), so no agent could receive it: fewer or shorter steps (a long script belongs in a file on the agents)",
			n, limit+headerRoom, headerRoom>>10)
	}
	return nil
}

// toRender names the agents whose desired document may differ from the one the last pass
// rendered: every agent of a migration whose rows were read from the store (a new run, another
// writer, a pass cut short), the agents whose assignment a pass wrote, the agents whose last put
// failed (tried again) or whom the consistency check found without it (Controller.resend), and
// every agent when the budget changed. The others' documents are as
// they were: an agent's document is made of its assignments, the specs (fixed per migration) and
// the epoch (fixed per run, and a new run reads every migration's rows).
func (c *Controller) toRender(passes []*pass) map[string]bool {
	limit := c.budget()
	all := limit != c.lastBudget
	c.lastBudget = limit
	render := map[string]bool{}
	for _, p := range passes {
		ids := p.saved
		if all || p.fresh {
			ids = p.order
		}
		for _, id := range ids {
			render[id] = true
		}
	}
	c.mu.Lock()
	for id := range c.writeErr {
		render[id] = true
	}
	for id := range c.resend {
		render[id] = true
	}
	c.resend = map[string]bool{}
	c.mu.Unlock()
	return render
}

// desiredDocuments renders the desired document of each agent named in render from the
// passes; an agent with nothing to do gets nil (an empty document, if it was sent one). A
// document over the budget first loses the steps of its rollback requests (an agent rolls back
// what its journal recorded), then the apply requests of the newest migrations until it fits;
// each request left out fails its assignment, with the reason, and that migration is saved
// again (and the agent's document rendered again).
func (c *Controller) desiredDocuments(ctx context.Context, passes []*pass, render map[string]bool) (map[string][]byte, error) {
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	limit := c.budget()
	byName := make(map[string]*pass, len(passes))
	for _, p := range passes {
		byName[p.m.Name] = p
	}
	docs := make(map[string][]byte, len(render))
	var errs []error
	var es []entry
	for round := 0; ; round++ {
		touched := map[*pass]bool{}
		again := map[string]bool{}
		for id := range render {
			es = es[:0]
			for _, p := range passes {
				if e, ok := p.desiredEntry(id); ok {
					es = append(es, e)
				}
			}
			if len(es) == 0 {
				docs[id] = nil
				continue
			}
			c.stats.rendered++
			doc, dropped := fit(id, epoch, es, limit)
			docs[id] = doc
			for _, e := range dropped {
				reason := fmt.Sprintf("cannot be delivered: with this request the agent's desired document would be over the NATS server's max payload of %d bytes",
					limit+headerRoom)
				if p := byName[e.Migration]; p != nil {
					p.undeliverable(id, reason)
					touched[p] = true
					again[id] = true
				}
			}
		}
		if len(touched) == 0 || round > 0 {
			return docs, errors.Join(errs...)
		}
		for p := range touched {
			if err := p.save(ctx); err != nil {
				errs = append(errs, fmt.Errorf("migration %s: %w", p.m.Name, err))
			}
		}
		render = again
	}
}

// fit renders an agent's document within limit (0: any size), and returns the apply requests it
// had to leave out.
func fit(agentID string, epoch int64, es []entry, limit int) ([]byte, []entry) {
	doc := encodeDocument(agentID, epoch, es)
	if limit == 0 || len(doc) <= limit {
		return doc, nil
	}
	es = slices.Clone(es)
	for i := range es {
		if es[i].Action == wire.ActionRollback {
			es[i].Steps = nil
		}
	}
	// Newest migration first: the one that made the document too large is left out first.
	slices.SortStableFunc(es, func(a, b entry) int {
		return cmp.Or(b.created.Compare(a.created), strings.Compare(b.Migration, a.Migration))
	})
	var dropped []entry
	for doc = marshalDocument(agentID, epoch, es); len(doc) > limit; doc = marshalDocument(agentID, epoch, es) {
		i := slices.IndexFunc(es, func(e entry) bool { return e.Action == wire.ActionApply })
		if i < 0 {
			break // only cancels and rollbacks without steps left: small; sent as they are
		}
		dropped = append(dropped, es[i])
		es = slices.Delete(es, i, i+1)
	}
	return doc, dropped
}

// marshalDocument is an agent's desired document of es, by migration.
func marshalDocument(agentID string, epoch int64, es []entry) []byte {
	as := make([]wire.DesiredAssignment, len(es))
	for i, e := range es {
		as[i] = e.DesiredAssignment
	}
	sort.Slice(as, func(i, j int) bool { return as[i].Migration < as[j].Migration })
	doc, _ := json.Marshal(wire.DesiredState{AgentID: agentID, Epoch: epoch, Assignments: nonNil(as)})
	return doc
}

// encodeDocument is marshalDocument, byte for byte, made of the entries' encodings: the agents
// of one request of a migration share its entry (desiredEntry), steps and all, and a pass that
// dispatches a fleet encodes it once instead of once an agent.
func encodeDocument(agentID string, epoch int64, es []entry) []byte {
	if len(es) > 1 {
		es = slices.Clone(es)
		slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.Migration, b.Migration) })
	}
	n := len(`{"agent_id":"","epoch":,"assignments":[]}`) + len(agentID) + 20
	for _, e := range es {
		n += len(e.encoded) + 1
	}
	doc := make([]byte, 0, n)
	doc = append(doc, `{"agent_id":`...)
	doc = appendJSONString(doc, agentID)
	doc = append(doc, `,"epoch":`...)
	doc = strconv.AppendInt(doc, epoch, 10)
	doc = append(doc, `,"assignments":[`...)
	for i, e := range es {
		if i > 0 {
			doc = append(doc, ',')
		}
		enc := e.encoded
		if enc == nil {
			enc, _ = json.Marshal(e.DesiredAssignment)
		}
		doc = append(doc, enc...)
	}
	return append(doc, "]}"...)
}

// appendJSONString appends s as json.Marshal encodes a string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s)
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// desiredInFlight bounds the desired documents being put at once. The puts of a pass are
// pipelined on the bucket's connection instead of waiting a round trip each; the bound keeps a
// pass over a large fleet from flooding the connection's buffers or the server. Under a
// fleet's load a put takes a few hundred milliseconds, and the puts of an apply are the
// rollout's critical path: 128 in flight wrote 10,000 documents in 18–22 s on a 2-core machine
// that 1,024 wrote in 9 s.
const desiredInFlight = 1024

// writeDesired puts each agent's desired document into the desired bucket when it differs from
// what this controller last wrote; docs holds the documents a pass rendered (see toRender), nil
// for an agent with nothing to do: an agent whose work is over gets an empty document (once), so
// it does not keep acting on a finished request. The puts run concurrently, at most
// desiredInFlight at a time, and each key's outcome is its own: a document the bus refuses (or
// whose put is lost with the connection) is not recorded as written and is rendered and tried
// again on the next pass; it is logged when its error changes, not on every pass. Every put of a
// pass has ended when writeDesired returns, so the puts of two passes to one key never overlap.
func (c *Controller) writeDesired(ctx context.Context, docs map[string][]byte) error {
	if len(docs) == 0 {
		return nil // most passes render nothing: no puts, and no watcher of the connection
	}
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	agents := make([]string, 0, len(docs))
	for id := range docs {
		agents = append(agents, id)
	}
	sort.Strings(agents)
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, desiredInFlight)
		emu  sync.Mutex
		errs []error
	)
	// A put lost with the connection would wait for desiredPutTimeout; once the connection is
	// seen down, the puts of this call end at once and go again with the next pass.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	defer close(watched)
	if c.cfg.Connected != nil {
		go func() {
			t := time.NewTicker(busCheckEvery)
			defer t.Stop()
			for {
				select {
				case <-watched:
					return
				case <-t.C:
					if !c.cfg.Connected() {
						cancel(errBusLost)
						return
					}
				}
			}
		}()
	}
	for _, id := range agents {
		doc := docs[id]
		empty := doc == nil
		c.mu.Lock()
		w, ok := c.written[id]
		c.mu.Unlock()
		if empty {
			if !ok {
				continue // never sent anything: nothing to take back
			}
			doc, _ = json.Marshal(wire.DesiredState{AgentID: id, Epoch: epoch, Assignments: []wire.DesiredAssignment{}})
		}
		d := digest(doc)
		if ok && w == d {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.putDesired(ctx, id, doc, d, empty); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// desiredWriter writes the desired documents of the controller's passes from its own goroutine:
// one writeDesired at a time (so the puts of two passes to one key never overlap), each with the
// newest documents offered — a pass offers the documents it rendered, and a document a later
// pass replaced before it was taken is never written. A put that fails is rendered and offered
// again by a later pass (toRender), and logged as writeDesired logs it.
type desiredWriter struct {
	mu   sync.Mutex
	next map[string][]byte // nil: nothing new
	wake chan struct{}     // capacity 1
}

func newDesiredWriter() *desiredWriter { return &desiredWriter{wake: make(chan struct{}, 1)} }

// offer hands the writer a pass's documents, adding them to those it has not taken yet (an
// agent's newer document replacing its older one).
func (w *desiredWriter) offer(docs map[string][]byte) {
	w.mu.Lock()
	if w.next == nil {
		w.next = docs
	} else {
		maps.Copy(w.next, docs)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes what is offered until ctx ends.
func (w *desiredWriter) run(ctx context.Context, c *Controller) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		docs := w.next
		w.next = nil
		w.mu.Unlock()
		if docs != nil {
			_ = c.writeDesired(ctx, docs) // each failed key is logged by putDesired and tried again
		}
	}
}

// busCheckEvery is how often a burst of puts looks at the connection (Config.Connected).
const busCheckEvery = 100 * time.Millisecond

// errBusLost ends the puts in flight when the connection to NATS is seen down.
var errBusLost = errors.New("the connection to NATS was lost")

// desiredPutTimeout bounds one put. The puts are pipelined, desiredInFlight at a time, so a put
// waits behind the others for about desiredInFlight / the server's rate: the client's default
// of 5 s would time out every put of a server slower than about 200 puts a second (a replicated
// bucket on slow disks), and each would be put again on the next pass. A put that times out is
// put again all the same.
const desiredPutTimeout = 30 * time.Second

// putDesired puts one agent's document (whose digest is d) and records the outcome for that key
// alone.
func (c *Controller) putDesired(ctx context.Context, id string, doc []byte, d docDigest, empty bool) error {
	pctx, cancel := context.WithTimeout(ctx, desiredPutTimeout)
	defer cancel()
	if _, err := c.cfg.Desired.Put(pctx, id, doc); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		err = fmt.Errorf("desired state of %s (%d bytes): %w", id, len(doc), err)
		c.mu.Lock()
		if c.writeErr[id] != err.Error() && ctx.Err() == nil {
			c.log.Warn("migration controller: cannot write an agent's desired state; trying again on the next pass", "agent", id, "err", err)
		}
		c.writeErr[id] = err.Error()
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	delete(c.writeErr, id)
	if empty {
		delete(c.written, id)
	} else {
		c.written[id] = d
	}
	c.mu.Unlock()
	return nil
}

// docDigest identifies a desired document the controller wrote: all it needs to know is
// whether the next one is the same. Keeping the documents themselves cost a kilobyte or so an
// agent (about 100 MB at 100,000 agents). It never leaves the process, so a hash seeded at
// random per process serves: two of them (128 bits), fast enough to take of every document a
// pass renders.
type docDigest [2]uint64

var digestSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func digest(doc []byte) docDigest {
	return docDigest{maphash.Bytes(digestSeeds[0], doc), maphash.Bytes(digestSeeds[1], doc)}
}

func nonNil(as []wire.DesiredAssignment) []wire.DesiredAssignment {
	if as == nil {
		return []wire.DesiredAssignment{}
	}
	return as
}

// stepSpecs converts a spec's steps into what agents run.
func stepSpecs(sp *spec.Migration) []wire.StepSpec { return sp.StepSpecs() }
