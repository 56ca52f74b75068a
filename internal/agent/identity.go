package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"godwit.dev/godwit/internal/datadir"
	"godwit.dev/godwit/internal/fault"
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

// loadIdentity returns the stored identity, or (nil, nil) when the state dir has none.
func loadIdentity(dir *datadir.Dir) (*Identity, error) {
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
	return &id, nil
}

func saveIdentity(dir *datadir.Dir, id *Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return dir.WriteFile(identityFile, b)
}

// enroll exchanges the enrollment token for an identity over HTTP.
func enroll(ctx context.Context, hubURL string, req wire.EnrollRequest) (*Identity, error) {
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(hubURL, "/")+"/api/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
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
	return &Identity{
		AgentID: er.AgentID, Name: er.Name, Hub: hubURL, NATSURLs: er.NATSURLs, NATSUser: er.NATSUser,
		NATSPassword: er.NATSPassword, HeartbeatInterval: er.HeartbeatInterval, EnrolledAt: time.Now().UTC(),
	}, nil
}
