package ui

import (
	"net/http"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/wire"
)

// auditPerPage is the audit page's page size.
const auditPerPage = 50

type auditData struct {
	Since, Actor, Action string
	Entries              []wire.AuditEntry
	Cursor, Next         string
	Error                string
}

// auditLog shows the audit log, newest first, filtered like godwit audit (since, actor, action),
// with keyset pages. The route needs the role of GET /api/v1/audit.
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	q := r.URL.Query()
	d := &auditData{Since: q.Get("since"), Actor: q.Get("actor"), Action: q.Get("action"), Cursor: q.Get("cursor")}
	v := &view{Template: "audit", Title: "Audit log", Nav: "audit", Data: d}
	params := map[string][]string{"limit": {"50"}}
	for k, val := range map[string]string{"since": d.Since, "actor": d.Actor, "action": d.Action, "cursor": d.Cursor} {
		if val != "" {
			params[k] = []string{val}
		}
	}
	aq, err := api.ParseAuditQuery(params, s.now())
	if err != nil {
		d.Error = message(err)
		return v, nil
	}
	aq.Limit = auditPerPage
	d.Entries, d.Next, err = s.cfg.Store.QueryAudit(r.Context(), aq)
	if err != nil {
		if statusOf(err) < 500 {
			d.Error = message(err)
			return v, nil
		}
		return nil, err
	}
	return v, nil
}
