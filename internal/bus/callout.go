package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"godwit.dev/godwit/internal/fault"
)

// Names under which the hub keeps its auth-callout keys (nkey seeds) in its SQL store, so that
// every replica on the same database signs with the same key.
const (
	SettingCalloutIssuer = "nats_callout_issuer_seed"
	SettingCalloutXKey   = "nats_callout_xkey_seed"
)

// CalloutQueue is the queue group of the hub replicas answering auth-callout requests: each
// request is answered by exactly one of them.
const CalloutQueue = "godwit-auth-callout"

// calloutWorkers bounds the requests one replica decides at once; more wait in the subscription.
const calloutWorkers = 64

// CalloutKeys are the hub's auth-callout keys. The issuer, an account nkey, signs every response
// and every user JWT in it; the cluster's auth_callout block names its public key. The xkey, a
// curve key, opens the requests the servers encrypt to it (they carry agents' passwords) and
// seals the responses.
type CalloutKeys struct {
	issuer, xkey       nkeys.KeyPair
	issuerPub, xkeyPub string
	probe              *probeKey
}

// LoadCalloutKeys returns the hub's callout keys, creating them on the first start of the first
// hub. ensure stores value under key unless a value is stored already, and returns the stored
// value; the hub passes its store's EnsureSetting, so replicas starting together agree.
func LoadCalloutKeys(ctx context.Context, ensure func(ctx context.Context, key, value string) (string, error)) (*CalloutKeys, error) {
	ikp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("callout keys: %w", err)
	}
	xkp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, fmt.Errorf("callout keys: %w", err)
	}
	iseed, _ := ikp.Seed()
	xseed, _ := xkp.Seed()
	storedI, err := ensure(ctx, SettingCalloutIssuer, string(iseed))
	if err != nil {
		return nil, fmt.Errorf("callout keys: %w", err)
	}
	storedX, err := ensure(ctx, SettingCalloutXKey, string(xseed))
	if err != nil {
		return nil, fmt.Errorf("callout keys: %w", err)
	}
	return ParseCalloutKeys(storedI, storedX)
}

// ParseCalloutKeys makes the keys from their seeds (an account seed "SA…" and a curve seed
// "SX…").
func ParseCalloutKeys(issuerSeed, xkeySeed string) (*CalloutKeys, error) {
	ikp, err := nkeys.FromSeed([]byte(issuerSeed))
	if err != nil {
		return nil, fmt.Errorf("callout issuer seed: %w", err)
	}
	ipub, err := ikp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(ipub) {
		return nil, errors.New("callout issuer seed: not an account key")
	}
	xkp, err := nkeys.FromCurveSeed([]byte(xkeySeed))
	if err != nil {
		return nil, fmt.Errorf("callout xkey seed: %w", err)
	}
	xpub, err := xkp.PublicKey()
	if err != nil || !nkeys.IsValidPublicCurveKey(xpub) {
		return nil, errors.New("callout xkey seed: not a curve key")
	}
	return &CalloutKeys{issuer: ikp, xkey: xkp, issuerPub: ipub, xkeyPub: xpub, probe: newProbeKey(issuerSeed)}, nil
}

// Issuer is the public account key the cluster's auth_callout block names as issuer.
func (k *CalloutKeys) Issuer() string { return k.issuerPub }

// XKey is the public curve key the cluster's auth_callout block names as xkey.
func (k *CalloutKeys) XKey() string { return k.xkeyPub }

// CalloutConfig configures the auth-callout responder.
type CalloutConfig struct {
	// Conn is the hub's connection to the cluster, as a user of the callout account (AccountHub)
	// listed in auth_users.
	Conn *nats.Conn
	Keys *CalloutKeys
	Auth Authenticator
	// LookupTimeout bounds one credential look-up; 0 means DefaultAuthLookupTimeout. It must be
	// shorter than the cluster's authorization timeout, or answers arrive after the server gave up.
	LookupTimeout time.Duration
	Logger        *slog.Logger
	// Now is the clock for the probe identities' expiry; nil means time.Now.
	Now func() time.Time
}

// Callout answers the external cluster's auth-callout requests: the same decision, by the same
// rule, as the embedded server's authenticator (an enrolled, unrevoked agent with its password),
// and the same outcome: a user in AccountAgents with AgentPermissions.
type Callout struct {
	cfg CalloutConfig
	v   *verifier
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup

	mu  sync.Mutex
	sub *nats.Subscription
}

// StartCallout subscribes to the auth-callout subject in the queue group CalloutQueue.
func StartCallout(cfg CalloutConfig) (*Callout, error) {
	switch {
	case cfg.Conn == nil:
		return nil, fault.Invalid("Conn", "a connection to the cluster is required")
	case cfg.Keys == nil:
		return nil, fault.Invalid("Keys", "callout keys are required")
	case cfg.Auth == nil:
		return nil, fault.Invalid("Auth", "an authenticator is required")
	case cfg.LookupTimeout < 0:
		return nil, fault.Invalid("LookupTimeout", "must not be negative")
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = DefaultAuthLookupTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := newCallout(cfg)
	sub, err := cfg.Conn.QueueSubscribe(server.AuthCalloutSubject, CalloutQueue, c.onRequest)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("auth callout: subscribe: %w", err)
	}
	if err := cfg.Conn.Flush(); err != nil {
		_ = sub.Unsubscribe()
		c.cancel()
		return nil, fmt.Errorf("auth callout: subscribe: %w", err)
	}
	c.sub = sub
	return c, nil
}

func newCallout(cfg CalloutConfig) *Callout {
	c := &Callout{
		cfg: cfg,
		log: cfg.Logger.With("component", "auth-callout"),
		sem: make(chan struct{}, calloutWorkers),
	}
	c.v = &verifier{auth: cfg.Auth, timeout: cfg.LookupTimeout, log: c.log, probe: cfg.Keys.probe, now: cfg.Now}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Stop unsubscribes and waits for the requests being decided. Safe to call twice.
func (c *Callout) Stop(ctx context.Context) error {
	c.mu.Lock()
	sub := c.sub
	c.sub = nil
	c.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("auth callout: stop: %w", ctx.Err())
	}
}

// onRequest runs on the subscription's goroutine: it hands the request to a worker, waiting for
// one when calloutWorkers are busy (a slow store slows connects, it does not pile up goroutines).
func (c *Callout) onRequest(m *nats.Msg) {
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		return
	}
	c.wg.Add(1)
	go func() {
		defer func() { <-c.sem; c.wg.Done() }()
		resp, err := c.answer(c.ctx, m.Header.Get(server.AuthRequestXKeyHeader), m.Data)
		if err != nil {
			// Nothing to answer to: the server refuses the client when its wait ends.
			c.log.Warn("nats: auth callout request dropped", "err", err)
			return
		}
		if err := m.Respond(resp); err != nil {
			c.log.Warn("nats: auth callout response not sent", "err", err)
		}
	}()
}

// maxCalloutRequest bounds a request before it is decoded: a request is a JWT of a few KiB
// (client TLS certificates make it larger); anything far bigger is not from a NATS server.
const maxCalloutRequest = 1 << 20

// answer decides one request and returns the response to send, or an error when there is nothing
// that could be answered (the request does not decode, or it is not a valid request). serverXKey
// is the Nats-Server-Xkey header: when set, the request is sealed to the hub's xkey by that key,
// and the response is sealed back to it.
func (c *Callout) answer(ctx context.Context, serverXKey string, data []byte) ([]byte, error) {
	req, err := c.decodeRequest(serverXKey, data)
	if err != nil {
		return nil, err
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	user := req.ConnectOptions.Username
	if err := c.v.check(ctx, user, req.ConnectOptions.Password); err != nil {
		resp.Error = err.Error()
	} else if bucket, err := c.v.failoverBucket(ctx, user); err != nil {
		resp.Error = err.Error()
	} else if resp.Jwt, err = c.userJWT(req.UserNkey, user, bucket); err != nil {
		return nil, err
	}
	token, err := resp.Encode(c.cfg.Keys.issuer)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	if serverXKey == "" {
		return []byte(token), nil
	}
	sealed, err := c.cfg.Keys.xkey.Seal([]byte(token), serverXKey)
	if err != nil {
		return nil, fmt.Errorf("seal response: %w", err)
	}
	return sealed, nil
}

// decodeRequest opens (when sealed) and decodes an authorization request, and checks what the
// response depends on: a signed, unexpired request claim naming a user nkey and a server.
func (c *Callout) decodeRequest(serverXKey string, data []byte) (*jwt.AuthorizationRequestClaims, error) {
	if len(data) > maxCalloutRequest {
		return nil, fmt.Errorf("request of %d bytes, over %d", len(data), maxCalloutRequest)
	}
	if serverXKey != "" {
		if !nkeys.IsValidPublicCurveKey(serverXKey) {
			return nil, fmt.Errorf("%s header is not a public curve key", server.AuthRequestXKeyHeader)
		}
		opened, err := c.cfg.Keys.xkey.Open(data, serverXKey)
		if err != nil {
			return nil, fmt.Errorf("open sealed request: %w", err)
		}
		data = opened
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	for _, issue := range vr.Issues {
		if issue.Blocking || issue.TimeCheck { // an expired request: the server no longer waits
			return nil, fmt.Errorf("invalid request: %w", issue)
		}
	}
	if !nkeys.IsValidPublicServerKey(req.Server.ID) {
		return nil, fmt.Errorf("invalid request: server id %q is not a server key", req.Server.ID)
	}
	if req.Issuer != req.Server.ID {
		return nil, errors.New("invalid request: not signed by the server it names")
	}
	if serverXKey != "" && req.Server.XKey != serverXKey {
		return nil, errors.New("invalid request: sealed by another key than the server's")
	}
	return req, nil
}

// userJWT is the user the server binds the connection to: in AccountAgents, named by the agent
// ID (what monitoring and the kick API filter on), with exactly the embedded server's permissions
// and connection limits, and only on plain NATS connections (no leaf node, websocket or MQTT).
func (c *Callout) userJWT(userNkey, agentID, bucket string) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = agentID
	uc.Audience = AccountAgents
	uc.Permissions = jwtPermissions(AgentPermissionsIn(agentID, bucket))
	uc.AllowedConnectionTypes = jwt.StringList{jwt.ConnectionTypeStandard}
	// The same limits as the agents' account; nats-server (2.15) applies the account's to a
	// callout user, and these should it ever read a callout user's own.
	uc.Limits.Subs, uc.Limits.Payload = AgentMaxSubscriptions, AgentMaxPayload
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		return "", fmt.Errorf("user claims for %s: %w", agentID, errs[0])
	}
	s, err := uc.Encode(c.cfg.Keys.issuer)
	if err != nil {
		return "", fmt.Errorf("encode user claims for %s: %w", agentID, err)
	}
	return s, nil
}

// jwtPermissions converts the embedded server's permissions to a user JWT's.
func jwtPermissions(p *server.Permissions) jwt.Permissions {
	var out jwt.Permissions
	if p.Publish != nil {
		out.Pub = jwt.Permission{Allow: p.Publish.Allow, Deny: p.Publish.Deny}
	}
	if p.Subscribe != nil {
		out.Sub = jwt.Permission{Allow: p.Subscribe.Allow, Deny: p.Subscribe.Deny}
	}
	return out
}
