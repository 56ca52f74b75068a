package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/pki"
	"godwit.dev/godwit/internal/wire"
)

// Files in the state dir.
const (
	identityFile = "identity.json"
	outboxFile   = "outbox.db"
	journalFile  = "journal.db"
)

// Identity is what enrollment gives an agent; it is kept 0600 in the state dir and reused on
// every later start.
type Identity struct {
	AgentID           string    `json:"agent_id"`
	Name              string    `json:"name"`
	Hub               string    `json:"hub"`
	NATSURLs          []string  `json:"nats_urls"`
	NATSUser          string    `json:"nats_user"`
	NATSPassword      string    `json:"nats_password"`
	HeartbeatInterval string    `json:"heartbeat_interval"`
	EnrolledAt        time.Time `json:"enrolled_at"`
}

// loadIdentity returns the stored identity, or (nil, nil) when the state dir has none. NATS URLs
// with credentials in them (handed out by hubs before they stopped doing so: the hub's own
// user and password) are cleaned and the file rewritten, with a warning.
func loadIdentity(dir *datadir.Dir, log *slog.Logger) (*Identity, error) {
	raw, err := os.ReadFile(dir.Join(identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var id Identity
	if err := json.Unmarshal(raw, &id); err != nil || id.AgentID == "" || id.NATSPassword == "" {
		return nil, fmt.Errorf("%s is corrupt (%v); it was left untouched: restore it, or enroll again into a new state dir", dir.Join(identityFile), err)
	}
	dirty := false
	for i, u := range id.NATSURLs {
		clean, err := credential.StripUserinfo(u)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir.Join(identityFile), err)
		}
		if clean != u {
			id.NATSURLs[i], dirty = clean, true
		}
	}
	if dirty {
		log.Warn("identity.json held NATS URLs with another user's credentials (from an older hub); removed them",
			"nats", strings.Join(id.NATSURLs, ","))
		if err := saveIdentity(dir, &id); err != nil {
			return nil, err
		}
	}
	return &id, nil
}

func saveIdentity(dir *datadir.Dir, id *Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return dir.WriteFile(identityFile, b)
}

// enroll exchanges the enrollment token for an identity over HTTP(S) and keeps, in the state dir,
// the CAs the agent trusts from then on. With a token that pins the hub's CA, the hub is accepted
// only if its certificate chain leads to that CA, which is saved; with --hub-ca, that CA is saved;
// otherwise the hub is verified against the system roots (or is plaintext on loopback).
func enroll(ctx context.Context, cfg *config.Agent, req wire.EnrollRequest, dir *datadir.Dir, tr *trust) (*Identity, error) {
	hubURL := cfg.Hub
	secret, pin, err := credential.ParseEnrollToken(cfg.EnrollToken)
	if err != nil {
		return nil, fault.Invalid(config.Describe(cfg, "enrollToken"), "%v", err)
	}
	u, err := url.Parse(hubURL)
	if err != nil {
		return nil, fault.Invalid(config.Describe(cfg, "hub"), "%v", err)
	}
	if pin != "" && u.Scheme != "https" {
		return nil, fault.Invalid(config.Describe(cfg, "hub"), "the enrollment token pins the hub's CA, so the hub is reached over TLS: use https:// (got %s)", hubURL)
	}
	if err := tr.checkHubURL(hubURL); err != nil {
		return nil, err
	}
	client := tr.httpClient()
	var mu sync.Mutex
	var pinned *x509.Certificate
	if pin != "" {
		t := client.Transport.(*http.Transport)
		t.TLSClientConfig = pki.PinnedClientConfig(pin, u.Hostname(), func(c *x509.Certificate) {
			mu.Lock()
			defer mu.Unlock()
			pinned = c
		})
	}
	req.Token = secret
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(hubURL, "/")+"/api/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("enroll with %s: %w", hubURL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		var eb wire.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			sentinel := fault.FromCode(eb.Error.Code)
			if sentinel == nil {
				sentinel = errors.New(eb.Error.Code)
			}
			return nil, fmt.Errorf("enroll with %s: hub refused (%d): %s: %w", hubURL, resp.StatusCode, eb.Error.Message, sentinel)
		}
		return nil, fmt.Errorf("enroll with %s: HTTP %d", hubURL, resp.StatusCode)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(raw, &er); err != nil {
		return nil, fmt.Errorf("enroll with %s: bad response: %w", hubURL, err)
	}
	urls := make([]string, len(er.NATSURLs))
	for i, s := range er.NATSURLs {
		if urls[i], err = credential.StripUserinfo(s); err != nil {
			return nil, fmt.Errorf("enroll with %s: bad NATS URL: %w", hubURL, err)
		}
	}
	// The CAs first: identity.json is what makes the state dir enrolled.
	var hubCA []byte
	switch {
	case pin != "":
		mu.Lock()
		if pinned != nil {
			hubCA = pki.CertPEM(pinned)
		}
		mu.Unlock()
		if hubCA == nil {
			return nil, fmt.Errorf("enroll with %s: the pinned CA was not seen in the TLS handshake", hubURL)
		}
	case cfg.HubCA != "":
		if hubCA, err = os.ReadFile(cfg.HubCA); err != nil {
			return nil, err
		}
	}
	if hubCA != nil {
		if err := dir.WriteFile(hubCAFile, hubCA); err != nil {
			return nil, fmt.Errorf("save hub CA: %w", err)
		}
	}
	if er.NATSCA != "" {
		if _, err := pki.ParseCerts([]byte(er.NATSCA)); err != nil {
			return nil, fmt.Errorf("enroll with %s: the NATS CA in the response: %w", hubURL, err)
		}
		if err := dir.WriteFile(natsCAFile, []byte(er.NATSCA)); err != nil {
			return nil, fmt.Errorf("save NATS CA: %w", err)
		}
	}
	return &Identity{
		AgentID: er.AgentID, Name: er.Name, Hub: hubURL, NATSURLs: urls, NATSUser: er.NATSUser,
		NATSPassword: er.NATSPassword, HeartbeatInterval: er.HeartbeatInterval, EnrolledAt: time.Now().UTC(),
	}, nil
}
