package bus

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// probePrefix marks the password of a probe identity: a throwaway agent identity the hub mints to
// check, at start, that an external cluster gives agents exactly their permissions.
const probePrefix = "gwp_"

// probeTTL is how long a probe password is accepted after it was minted.
const probeTTL = 2 * time.Minute

// probeViolationWait bounds the wait for the permissions violations the probe must draw.
const probeViolationWait = 5 * time.Second

// ErrNotEnforced means the external NATS cluster does not give agents the isolation of
// docs/security.md: the hub refuses to start on it.
var ErrNotEnforced = errors.New("the NATS cluster does not enforce per-agent permissions")

// probeKey mints and checks probe passwords: an HMAC of the identity and its expiry, keyed from
// the callout issuer's seed. Every replica on the same store holds the same seed, so whichever
// replica answers the probe's connection recognises it; nobody without the seed can mint one. A
// probe identity is a random agent ID that was never enrolled, so what it may do (only its own
// subjects) touches no agent.
type probeKey struct{ key []byte }

func newProbeKey(issuerSeed string) *probeKey {
	sum := sha256.Sum256([]byte("godwit auth-callout probe\x00" + issuerSeed))
	return &probeKey{key: sum[:]}
}

func (k *probeKey) mac(agentID string, expires int64) string {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(agentID + "\x00" + strconv.FormatInt(expires, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// mint returns a probe password for agentID, valid until now+probeTTL.
func (k *probeKey) mint(agentID string, now time.Time) string {
	exp := now.Add(probeTTL).Unix()
	return probePrefix + strconv.FormatInt(exp, 10) + "_" + k.mac(agentID, exp)
}

// verify checks a probe password: well-formed, minted for this agent ID, not expired.
func (k *probeKey) verify(agentID, password string, now time.Time) error {
	rest, ok := strings.CutPrefix(password, probePrefix)
	if !ok {
		return errors.New("not a probe password")
	}
	expS, mac, ok := strings.Cut(rest, "_")
	if !ok {
		return errors.New("malformed probe password")
	}
	exp, err := strconv.ParseInt(expS, 10, 64)
	if err != nil || strconv.FormatInt(exp, 10) != expS {
		return errors.New("malformed probe password")
	}
	if !hmac.Equal([]byte(mac), []byte(k.mac(agentID, exp))) {
		return errors.New("probe password does not verify")
	}
	if t := now.Unix(); t > exp || exp > t+int64(probeTTL/time.Second)+60 {
		return errors.New("probe password expired")
	}
	return nil
}

// ProbeConfig configures Probe.
type ProbeConfig struct {
	// URLs are the NATS URLs handed to agents.
	URLs []string
	Keys *CalloutKeys
	// System finds and closes the probe's connection, as revocation does for agents.
	System *SystemClient
	// Options are applied to the probe's connection (TLS settings).
	Options []nats.Option
	// Now is the clock of the probe password; nil means time.Now.
	Now func() time.Time
}

// Probe checks, with a throwaway agent identity, that an external cluster isolates agents as the
// embedded server does: the identity is let in by the hub's auth callout, lands in AccountAgents
// (found there through the system account), reads its own desired state, is refused on another
// agent's event subject, on writing its own desired state, on the JetStream API, on ">" and on
// "$SYS.>", and its connection is closed by the same kick that revocation uses. Any failure wraps
// ErrNotEnforced and says which check failed. ctx bounds the whole probe.
func Probe(ctx context.Context, cfg ProbeConfig) error {
	if cfg.Keys == nil || cfg.System == nil {
		return fault.Invalid("ProbeConfig", "keys and a system client are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	id, other := randomAgentID(), randomAgentID()
	errs := make(chan error, 64)
	closed := make(chan struct{})
	opts := append([]nats.Option{}, cfg.Options...)
	opts = append(opts,
		nats.Name("godwit-probe "+id),
		// Not MaxReconnects(0): that drops only the server it was on from the pool, and with
		// the other servers of a cluster left the kicked probe reconnects instead of closing.
		nats.NoReconnect(),
		nats.Timeout(5*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	nc, err := ConnectAgent(cfg.URLs, id, cfg.Keys.probe.mint(id, cfg.Now()), opts...)
	if err != nil {
		return fmt.Errorf("%w: a probe agent identity could not connect (%v): the cluster does not send unknown users to this hub's auth callout (issuer %s)",
			ErrNotEnforced, err, cfg.Keys.Issuer())
	}
	defer nc.Close()

	if _, _, err := GetDesired(ctx, nc, id); !errors.Is(err, fault.ErrNotFound) {
		return fmt.Errorf("%w: a probe agent could not read its own desired state (%v): the agents' account lacks the imports of docs/security.md",
			ErrNotEnforced, err)
	}

	// Each of these must be refused with a permissions violation naming the subject.
	denied := map[string]func() error{
		`publish to "` + wire.EventSubject(other) + `"`: func() error { return nc.Publish(wire.EventSubject(other), []byte(`{}`)) },
		`publish to "` + wire.KVSubject(wire.BucketDesired, id) + `"`: func() error {
			return nc.Publish(wire.KVSubject(wire.BucketDesired, id), []byte(`{}`))
		},
		`publish to "$JS.API.INFO"`:  func() error { return nc.PublishRequest("$JS.API.INFO", wire.AgentInbox(id)+".probe", nil) },
		`subscription to ">"`:        func() error { _, err := nc.SubscribeSync(">"); return err },
		`subscription to "$SYS.>"`:   func() error { _, err := nc.SubscribeSync("$SYS.>"); return err },
		`subscription to "_INBOX.>"`: func() error { _, err := nc.SubscribeSync("_INBOX.>"); return err },
	}
	for _, try := range denied {
		if err := try(); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	// The server sends each violation before it answers the flush's PING: by now they are all
	// in, and only the asynchronous handler may lag.
	grace := time.NewTimer(probeViolationWait)
	defer grace.Stop()
	for len(denied) > 0 {
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				continue
			}
			msg := strings.ToLower(err.Error())
			for what := range denied {
				if strings.Contains(msg, strings.ToLower(what)) {
					delete(denied, what)
				}
			}
		case <-grace.C:
			var missing []string
			for what := range denied {
				missing = append(missing, what)
			}
			return fmt.Errorf("%w: a probe agent was allowed to %s", ErrNotEnforced, strings.Join(missing, ", "))
		}
	}

	conns, err := cfg.System.AgentConnections(ctx, id)
	if err != nil {
		return fmt.Errorf("probe: list connections through the system account: %w", err)
	}
	if len(conns) == 0 {
		return fmt.Errorf("%w: the probe agent's connection is not in account %s", ErrNotEnforced, AccountAgents)
	}
	if n, err := cfg.System.DisconnectAgent(ctx, id); err != nil || n == 0 {
		return fmt.Errorf("probe: the system account could not close the probe's connection (closed %d): %v", n, err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		return fmt.Errorf("probe: the probe's connection was not closed after the kick: %w", ctx.Err())
	}
	return nil
}

// randomAgentID returns a random version-4 UUID, in the canonical form of agent IDs.
func randomAgentID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("bus: crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
