package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/pki"
)

// Files in the state dir holding the CAs the agent verifies the hub with.
const (
	// hubCAFile is the CA the agent verified the hub with at enrollment: pinned by the token's
	// fingerprint, or --hub-ca. Every later HTTP connection to the hub verifies against it.
	hubCAFile = "hub-ca.pem"
	// natsCAFile is the CA of the NATS servers, as the hub handed it at enrollment.
	natsCAFile = "nats-ca.pem"
)

// trust is whom the agent believes: the CAs for the hub's HTTP and for NATS (nil: the system
// roots), and whether plaintext beyond loopback is allowed.
type trust struct {
	hub, nats *x509.CertPool
	insecure  bool
}

// loadTrust reads the CAs kept in the state dir; before enrollment (none kept yet) --hub-ca is
// used for the hub.
func loadTrust(dir *datadir.Dir, cfg *config.Agent) (*trust, error) {
	t := &trust{insecure: cfg.InsecurePlaintext}
	var err error
	if t.hub, err = poolIfExists(dir.Join(hubCAFile)); err != nil {
		return nil, err
	}
	if t.hub == nil && cfg.HubCA != "" {
		if t.hub, err = pki.Pool(cfg.HubCA); err != nil {
			return nil, fmt.Errorf("hub CA: %w", err)
		}
	}
	if t.nats, err = poolIfExists(dir.Join(natsCAFile)); err != nil {
		return nil, err
	}
	return t, nil
}

func poolIfExists(path string) (*x509.CertPool, error) {
	p, err := pki.Pool(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w (it was left untouched: restore it, or enroll again into a new state dir)", err)
	}
	return p, nil
}

// httpClient talks to the hub: over TLS it verifies against the hub CA (or the system roots).
func (t *trust) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = pki.ClientConfig(t.hub)
	return &http.Client{Transport: tr}
}

// checkHubURL refuses plaintext HTTP to a hub beyond loopback unless insecure.
func (t *trust) checkHubURL(hubURL string) error {
	u, err := url.Parse(hubURL)
	if err != nil {
		return fmt.Errorf("hub URL %q: %w", hubURL, err)
	}
	if u.Scheme == "http" && !config.IsLoopback(u.Hostname()) && !t.insecure {
		return fmt.Errorf("the hub %s is plaintext HTTP on an address that is not loopback: use its https:// URL, or pass --insecure-plaintext", hubURL)
	}
	return nil
}

// natsOptions are the TLS settings of the agent's NATS connection: TLS against the NATS CA (or
// the system roots) whenever the agent has one or a server is beyond loopback, unless insecure.
// A server that then offers no TLS, or a certificate the CA did not sign, is refused.
func (t *trust) natsOptions(urls []string) []nats.Option {
	public := false
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && !config.IsLoopback(u.Hostname()) {
			public = true
		}
	}
	if t.nats == nil && (!public || t.insecure) {
		return nil
	}
	return []nats.Option{nats.Secure(pki.ClientConfig(t.nats))}
}
