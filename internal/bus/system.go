package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"godwit.dev/godwit/internal/fault"
)

// System-account request subjects of nats-server (2.10 and later).
const (
	sysConnzPing = "$SYS.REQ.SERVER.PING.CONNZ"
	sysKick      = "$SYS.REQ.SERVER.%s.KICK"
)

// DefaultGatherQuiet is how long SystemClient waits for more servers' answers after the last one.
const DefaultGatherQuiet = 300 * time.Millisecond

// SystemClient acts on an external cluster through a connection in its system account: it finds
// an agent's connections on every server (CONNZ, filtered by user and account) and closes them
// (the server's kick API). That is how revocation cuts live connections on a cluster, where the
// hub is not the server.
type SystemClient struct {
	nc *nats.Conn
	// Quiet ends the wait for answers from more servers once none came for this long.
	Quiet time.Duration
}

// NewSystemClient returns a client on nc, a connection as a user of the system account.
func NewSystemClient(nc *nats.Conn) *SystemClient {
	return &SystemClient{nc: nc, Quiet: DefaultGatherQuiet}
}

// AgentConn is one live connection of an agent: the server it is on and its client id there.
type AgentConn struct {
	Server string
	CID    uint64
}

// AgentConnections lists the agent's open connections in AccountAgents on every server that
// answers within ctx. No answer at all is an error (the connection is not in the system account,
// or the cluster is down).
func (s *SystemClient) AgentConnections(ctx context.Context, agentID string) ([]AgentConn, error) {
	if !ValidAgentID(agentID) {
		return nil, fault.Invalid("agentID", "not a canonical UUID: %q", agentID)
	}
	req, _ := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{
		Username: true, User: agentID, Account: AccountAgents, State: server.ConnOpen, Limit: 1024,
	}})
	var out []AgentConn
	answers, err := s.gather(ctx, sysConnzPing, req, func(data []byte) error {
		var resp server.ServerAPIConnzResponse
		if err := json.Unmarshal(data, &resp); err != nil {
			return fmt.Errorf("bad CONNZ answer: %w", err)
		}
		if resp.Error != nil {
			return fmt.Errorf("CONNZ: %s", resp.Error.Description)
		}
		if resp.Server == nil || resp.Data == nil {
			return errors.New("CONNZ answer without server or data")
		}
		for _, c := range resp.Data.Conns {
			// The server filters already; checking again costs nothing and never kicks
			// anyone else if a server ignores a filter.
			if c.AuthorizedUser == agentID && c.Account == AccountAgents {
				out = append(out, AgentConn{Server: resp.Server.ID, CID: c.Cid})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if answers == 0 {
		return nil, fmt.Errorf("no server answered %s: %w", sysConnzPing, fault.ErrUnavailable)
	}
	return out, nil
}

// DisconnectAgent closes every open connection of the agent in the cluster and returns how many it
// closed. Call it after the revocation is committed: reconnects then fail in the auth callout.
func (s *SystemClient) DisconnectAgent(ctx context.Context, agentID string) (int, error) {
	conns, err := s.AgentConnections(ctx, agentID)
	if err != nil {
		return 0, fmt.Errorf("disconnect agent %s: %w", agentID, err)
	}
	n := 0
	var errs []error
	for _, c := range conns {
		body, _ := json.Marshal(server.KickClientReq{CID: c.CID})
		resp, err := s.nc.RequestWithContext(ctx, fmt.Sprintf(sysKick, c.Server), body)
		if err != nil {
			errs = append(errs, fmt.Errorf("kick %d on %s: %w", c.CID, c.Server, requestErr(err)))
			continue
		}
		var r server.ServerAPIResponse
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			errs = append(errs, fmt.Errorf("kick %d on %s: bad answer %q", c.CID, c.Server, resp.Data))
			continue
		}
		if r.Error != nil {
			// Gone already (it closed between the listing and the kick) counts as done.
			if r.Error.Code == 404 {
				continue
			}
			errs = append(errs, fmt.Errorf("kick %d on %s: %s", c.CID, c.Server, r.Error.Description))
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("disconnect agent %s: %w", agentID, errors.Join(errs...))
	}
	return n, nil
}

// gather sends one request every server answers, and hands each answer to fn until no more came
// for Quiet, or ctx ends after at least one answer. It returns how many answers it handled.
func (s *SystemClient) gather(ctx context.Context, subject string, body []byte, fn func([]byte) error) (int, error) {
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(subject, inbox, body); err != nil {
		return 0, err
	}
	n := 0
	for {
		wait := ctx
		var cancel context.CancelFunc = func() {}
		if n > 0 {
			wait, cancel = context.WithTimeout(ctx, s.Quiet)
		}
		m, err := sub.NextMsgWithContext(wait)
		cancel()
		if err != nil {
			if n > 0 && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
				return n, nil
			}
			return n, fmt.Errorf("%s: %w", subject, requestErr(err))
		}
		if len(m.Data) == 0 && m.Header.Get(hdrStatus) == "503" {
			return n, fmt.Errorf("%s: %w", subject, requestErr(nats.ErrNoResponders))
		}
		if err := fn(m.Data); err != nil {
			return n, err
		}
		n++
	}
}
