package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// isCertError reports a TLS verification failure of the server's certificate.
func isCertError(err error) bool {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &host) || errors.As(err, &verify)
}

func isAuthError(err error) bool {
	return err != nil && (err == nats.ErrAuthorization || strings.Contains(strings.ToLower(err.Error()), "authorization violation"))
}

// rejectionCheck decides what a refused NATS login means. The server refuses in the same words
// whether the agent was revoked or the hub could not look its credentials up (store down), so
// the agent asks the hub over HTTP with the same credentials: 401/403 means it is cut off and
// must stop; anything else (hub unreachable, 5xx) means keep retrying.
type rejectionCheck struct {
	id     *Identity
	log    *slog.Logger
	reject func()
	client *http.Client

	mu      sync.Mutex
	running bool
	last    time.Time
}

func newRejectionCheck(id *Identity, log *slog.Logger, client *http.Client, reject func()) *rejectionCheck {
	return &rejectionCheck{id: id, log: log, reject: reject, client: client}
}

// trigger runs one check in the background, at most one at a time and one per second.
func (c *rejectionCheck) trigger(ctx context.Context) {
	c.mu.Lock()
	if c.running || time.Since(c.last) < time.Second {
		c.mu.Unlock()
		return
	}
	c.running, c.last = true, time.Now()
	c.mu.Unlock()
	go func() {
		defer func() { c.mu.Lock(); c.running = false; c.mu.Unlock() }()
		code, err := c.ask(ctx)
		switch {
		case err != nil:
			c.log.Warn("hub refused the NATS login and cannot be asked why; retrying", "err", err)
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			c.log.Error("the hub rejected this agent's credentials", "agent", c.id.AgentID, "http_status", code)
			c.reject()
		default:
			c.log.Warn("hub refused the NATS login but says the agent is enrolled; retrying", "http_status", code)
		}
	}()
}

func (c *rejectionCheck) ask(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.id.Hub, "/")+"/api/v1/agents/self", nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(c.id.AgentID, c.id.NATSPassword)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
