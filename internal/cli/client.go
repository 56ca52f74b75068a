package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/config"
	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/pki"
	"godwit.dev/godwit/internal/wire"
)

// client talks to the hub's REST API.
type client struct {
	base, token string
	http        *http.Client
}

// clientConfig is the optional client config file.
type clientConfig struct {
	Hub   string `yaml:"hub"`
	Token string `yaml:"token"`
	// CA is a CA certificate file (PEM) to verify the hub's TLS with.
	CA string `yaml:"ca"`
}

// errNoHub means no hub URL is configured anywhere newClient looks.
var errNoHub = errors.New("no hub to talk to: pass --hub-url, set GODWIT_HUB, or write hub: in ~/.godwit/config.yaml")

// newClient finds the hub URL, token (admin or API) and the CA of the hub's TLS, first found wins for
// each: flags, GODWIT_HUB / GODWIT_TOKEN / GODWIT_HUB_CA, the client config file, then the local
// hub's default data dir (so a CLI on the hub's own machine works with no flags at all, TLS
// included). Without a CA the system roots verify the hub.
func newClient(opts *rootOptions) (*client, error) {
	hubURL, token, caFile := opts.hub, opts.token, opts.hubCA
	if hubURL == "" {
		hubURL = os.Getenv("GODWIT_HUB")
	}
	if token == "" {
		token = os.Getenv("GODWIT_TOKEN")
	}
	if caFile == "" {
		caFile = os.Getenv("GODWIT_HUB_CA")
	}
	cfgPath := opts.config
	if cfgPath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cfgPath = filepath.Join(home, ".godwit", "config.yaml")
		}
	}
	if hubURL == "" || token == "" || caFile == "" {
		if raw, err := os.ReadFile(cfgPath); err == nil {
			var cc clientConfig
			if err := yaml.Unmarshal(raw, &cc); err != nil {
				return nil, usageError{fmt.Errorf("client config %s: %w", cfgPath, err)}
			}
			hubURL, token, caFile = first(hubURL, cc.Hub), first(token, cc.Token), first(caFile, cc.CA)
		} else if opts.config != "" {
			return nil, usageError{fmt.Errorf("client config: %w", err)}
		}
	}
	if hubURL == "" || token == "" || caFile == "" {
		dir := first(os.Getenv("GODWIT_DATA_DIR"), config.DefaultHubDataDir())
		if raw, err := os.ReadFile(filepath.Join(dir, wire.HubEndpointFile)); err == nil {
			var ep wire.HubEndpoint
			if json.Unmarshal(raw, &ep) == nil && (hubURL == "" || hubURL == ep.API) {
				hubURL, caFile = ep.API, first(caFile, ep.CA)
			}
		}
		if token == "" {
			if raw, err := os.ReadFile(filepath.Join(dir, wire.AdminTokenFile)); err == nil {
				token = strings.TrimSpace(string(raw))
			}
		}
	}
	if hubURL == "" {
		return nil, usageError{errNoHub}
	}
	if token == "" {
		return nil, usageError{errors.New("no token: pass --token, set GODWIT_TOKEN, or write token: in ~/.godwit/config.yaml (the hub's admin token, or an API token from godwit token create --role)")}
	}
	httpc := defaultHTTP()
	if caFile != "" {
		pool, err := pki.Pool(caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("hub CA: %w", err)}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = pki.ClientConfig(pool)
		httpc.Transport = tr
	}
	return &client{base: strings.TrimSuffix(hubURL, "/"), token: token, http: httpc}, nil
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// do sends a JSON request and decodes a JSON response into out (if not nil). API errors come
// back wrapping their fault sentinel.
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.send(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.send(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

func (c *client) send(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("hub %s unreachable: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var eb wire.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			if s := fault.FromCode(eb.Error.Code); s != nil {
				return fmt.Errorf("%s: %w", eb.Error.Message, s)
			}
			return fmt.Errorf("%s (%s)", eb.Error.Message, eb.Error.Code)
		}
		return fmt.Errorf("hub answered HTTP %d", resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func defaultHTTP() *http.Client { return &http.Client{Timeout: 60 * time.Second} }
