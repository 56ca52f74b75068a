package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/pki"
)

// probeTimeout bounds the start-up probe of an external cluster.
const probeTimeout = 30 * time.Second

// setupTLS loads or makes the hub's certificate when it serves TLS (config.Hub.TLSEnabled), and
// says loudly when it serves plaintext beyond loopback because the operator asked for it.
func (h *Hub) setupTLS() error {
	if h.cfg.NATS.CA != "" {
		raw, err := os.ReadFile(h.cfg.NATS.CA)
		if err != nil {
			return fmt.Errorf("nats.ca: %w", err)
		}
		if _, err := pki.ParseCerts(raw); err != nil {
			return fmt.Errorf("nats.ca %s: %w", h.cfg.NATS.CA, err)
		}
		h.natsCA = raw
	}
	if public := h.cfg.PublicAddresses(); h.cfg.InsecurePlaintext && len(public) > 0 {
		h.log.Warn("serving HTTP and NATS WITHOUT TLS on addresses other than loopback (--insecure-plaintext): tokens and credentials cross the network in clear",
			"addresses", strings.Join(public, ","))
	}
	if !h.cfg.TLSEnabled() {
		return nil
	}
	var err error
	if h.cfg.TLS.Cert != "" {
		h.tls, err = pki.Load(h.cfg.TLS.Cert, h.cfg.TLS.Key, h.cfg.TLS.CA)
	} else {
		h.tls, err = pki.Ensure(h.dir.Join(pki.Dir), h.certHosts(), time.Now())
	}
	if err != nil {
		return err
	}
	leaf := h.tls.Cert.Leaf
	attrs := []any{"ca", h.tls.CAFile, "fingerprint", "sha256:" + h.tls.Fingerprint(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"dns_names", strings.Join(leaf.DNSNames, ","), "ips", fmt.Sprint(leaf.IPAddresses)}
	if h.tls.Generated {
		h.log.Info("tls: made a new server certificate", attrs...)
	} else {
		h.log.Info("tls: serving HTTP and NATS over TLS", attrs...)
	}
	return nil
}

// certHosts are the names and addresses the generated certificate covers: loopback, the host
// name, every address the hub listens on (all of this machine's addresses for 0.0.0.0 or ::), the
// advertised NATS hosts and tls.sans.
func (h *Hub) certHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if name, err := os.Hostname(); err == nil && name != "" {
		hosts = append(hosts, name)
	}
	listens := []string{h.cfg.Listen}
	if h.cfg.NATS.URL == "" {
		listens = append(listens, h.cfg.NATS.Listen)
	}
	for _, l := range listens {
		host, _, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			hosts = append(hosts, interfaceIPs()...)
			continue
		}
		hosts = append(hosts, host)
	}
	for _, a := range h.cfg.NATS.Advertise {
		if u, err := url.Parse(a); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return append(hosts, h.cfg.TLS.SANs...)
}

func interfaceIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// caFingerprint is what enrollment tokens pin, empty without a CA of the hub's own.
func (h *Hub) caFingerprint() string {
	if h.tls == nil {
		return ""
	}
	return h.tls.Fingerprint()
}

// agentNATSCA is the CA agents verify NATS with: the hub's own for the embedded server, the
// cluster's (nats.ca) for an external one; none means the system roots.
func (h *Hub) agentNATSCA() []byte {
	if h.server != nil {
		if h.tls == nil {
			return nil
		}
		return h.tls.CAPEM()
	}
	return h.natsCA
}

// natsTLS is the TLS option of a connection to the external cluster at urls: TLS against
// nats.ca (or the system roots) whenever a CA is configured or a URL is not loopback, so that no
// password is sent in clear to another machine unless the operator asked for --insecure-plaintext.
func (h *Hub) natsTLS(urls []string) []nats.Option {
	var pool *x509.CertPool
	if len(h.natsCA) > 0 {
		pool = x509.NewCertPool()
		pool.AppendCertsFromPEM(h.natsCA)
	}
	public := false
	for _, u := range urls {
		if p, err := url.Parse(strings.TrimSpace(u)); err == nil && !config.IsLoopback(p.Hostname()) {
			public = true
		}
	}
	if pool == nil && (!public || h.cfg.InsecurePlaintext) {
		return nil
	}
	return []nats.Option{nats.Secure(pki.ClientConfig(pool))}
}

// connectExternal connects to the external cluster with the credentials in urls.
func (h *Hub) connectExternal(urls, name string, opts ...nats.Option) (*nats.Conn, error) {
	list := strings.Split(urls, ",")
	opts = append(append(opts, nats.Name(name)), h.natsTLS(list)...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(credential.RedactURLs(list), ","), err)
	}
	return nc, nil
}

// startCallout loads the callout keys from the store (made by the first hub), writes the cluster
// configuration with them into the data dir, and answers the cluster's auth-callout requests.
func (h *Hub) startCallout(ctx context.Context) error {
	keys, err := bus.LoadCalloutKeys(ctx, func(ctx context.Context, key, value string) (string, error) {
		return h.store.EnsureSetting(ctx, key, value, time.Now())
	})
	if err != nil {
		return err
	}
	conf := bus.ClusterConfig(bus.ClusterParams{Issuer: keys.Issuer(), XKey: keys.XKey(),
		HubPassword: bus.ClusterPlaceholders.HubPassword, SystemPassword: bus.ClusterPlaceholders.SystemPassword})
	header := "# Godwit's part of the NATS cluster configuration, with this hub's auth-callout keys\n" +
		"# (docs/security.md). Replace the two passwords; restart every server after adding it.\n"
	if err := h.dir.WriteFile(ClusterConfigFile, []byte(header+conf)); err != nil {
		return fmt.Errorf("write %s: %w", ClusterConfigFile, err)
	}
	h.callout, err = bus.StartCallout(bus.CalloutConfig{Conn: h.nc, Keys: keys, Auth: agentAuth{h.store}, Logger: h.log})
	if err != nil {
		return err
	}
	h.calloutKeys = keys
	h.log.Info("nats: answering the cluster's auth callout", "issuer", keys.Issuer(), "xkey", keys.XKey(),
		"cluster_config", h.dir.Join(ClusterConfigFile))
	return nil
}

// probeExternal connects to the cluster's system account and runs bus.Probe: the hub refuses to
// start on a cluster that does not isolate agents as docs/security.md configures it.
func (h *Hub) probeExternal(ctx context.Context) error {
	var err error
	h.sysNC, err = h.connectExternal(h.cfg.NATS.System, "godwit-hub-system", nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to the NATS system account (nats.system): %w", err)
	}
	h.system = bus.NewSystemClient(h.sysNC)
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	err = bus.Probe(pctx, bus.ProbeConfig{URLs: h.endpoint.NATS, Keys: h.calloutKeys, System: h.system,
		Options: h.natsTLS(h.endpoint.NATS)})
	if err != nil {
		hint := fmt.Sprintf("add the configuration in %s to every server of the cluster (docs/security.md: auth callout issuer %s)",
			h.dir.Join(ClusterConfigFile), h.calloutKeys.Issuer())
		if errors.Is(err, bus.ErrNotEnforced) {
			return fmt.Errorf("%w; refusing to start: %s", err, hint)
		}
		return fmt.Errorf("probe of the NATS cluster: %w; %s", err, hint)
	}
	h.log.Info("nats: the cluster isolates agents (probe passed: callout, permissions, system account)")
	return nil
}
