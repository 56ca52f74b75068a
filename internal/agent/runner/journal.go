package runner

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/procgroup"
	"godwit.dev/godwit/internal/wire"
)

// appID marks a SQLite file as a Godwit runner journal ("GWRJ").
const (
	appID         = 0x4757524a
	schemaVersion = 3
)

const schema = `
CREATE TABLE meta (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	max_epoch INTEGER NOT NULL,           -- highest desired-state epoch accepted
	desired   BLOB                        -- the last accepted desired-state document (JSON)
);
INSERT INTO meta (id, max_epoch) VALUES (1, 0);

-- One row per (migration, attempt): the assignment's cursor and results.
CREATE TABLE assignments (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- order in which the agent took them on
	migration    TEXT    NOT NULL,
	attempt      INTEGER NOT NULL,
	generation   INTEGER NOT NULL,           -- highest generation acted on
	action       TEXT    NOT NULL,           -- the action of that generation
	from_version TEXT    NOT NULL DEFAULT '',
	to_version   TEXT    NOT NULL DEFAULT '',
	steps        BLOB    NOT NULL,           -- JSON []wire.StepSpec as acted on
	signature    TEXT    NOT NULL DEFAULT '', -- the steps' signature as received (package specsig)
	state        TEXT    NOT NULL,
	step         INTEGER NOT NULL DEFAULT 0, -- the step in progress, or where it ended
	phase        TEXT    NOT NULL DEFAULT 'detect', -- detect|run|verify|rollback: next or current command
	in_flight    INTEGER NOT NULL DEFAULT 0, -- 1: phase's command started, no result recorded
	applied      BLOB    NOT NULL DEFAULT '[]', -- JSON: steps whose run was started
	rolled_back  BLOB    NOT NULL DEFAULT '[]', -- JSON: steps whose rollback completed
	error        TEXT    NOT NULL DEFAULT '',
	exit_code    INTEGER,
	created_at   INTEGER NOT NULL,           -- Unix nanoseconds, Config.Now
	updated_at   INTEGER NOT NULL,
	UNIQUE (migration, attempt)
);

-- One row per command started: the audit trail of what ran on this node.
CREATE TABLE commands (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	migration   TEXT    NOT NULL,
	attempt     INTEGER NOT NULL,
	generation  INTEGER NOT NULL,
	step        INTEGER NOT NULL,
	phase       TEXT    NOT NULL,
	started_at  INTEGER NOT NULL,            -- when it was released to run (before: when it was recorded)
	finished_at INTEGER,                     -- NULL while running
	exit_code   INTEGER,
	timed_out   INTEGER NOT NULL DEFAULT 0,
	error       TEXT    NOT NULL DEFAULT '',
	output_tail TEXT    NOT NULL DEFAULT '',
	pgid        INTEGER,                     -- its process group, recorded before it runs anything
	boot_id     TEXT    NOT NULL DEFAULT '', -- the kernel's boot id then
	pid_ns      TEXT    NOT NULL DEFAULT '', -- the pid namespace of pgid
	start_time  INTEGER                      -- the group leader's start time, clock ticks since boot
);
CREATE INDEX commands_assignment ON commands (migration, attempt);

-- Events written with the transition they report, removed once the outbox has taken them.
CREATE TABLE pending_events (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	id      TEXT    NOT NULL UNIQUE,
	payload BLOB    NOT NULL                 -- the encoded wire.Event
);`

// upgrades[v] brings a journal of schema version v to v+1.
var upgrades = map[int][]string{
	1: {`ALTER TABLE commands ADD COLUMN pgid INTEGER`,
		`ALTER TABLE commands ADD COLUMN boot_id TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE commands ADD COLUMN pid_ns TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE commands ADD COLUMN start_time INTEGER`},
	2: {`ALTER TABLE assignments ADD COLUMN signature TEXT NOT NULL DEFAULT ''`},
}

// Assignment states.
const (
	stateDetecting      = "detecting"
	stateApplying       = "applying"
	stateVerifying      = "verifying"
	stateSucceeded      = "succeeded"
	stateNotNeeded      = "not_needed"
	stateFailed         = "failed"
	stateRollingBack    = "rolling_back"
	stateRolledBack     = "rolled_back"
	stateRollbackFailed = "rollback_failed"
	stateSuperseded     = "superseded"
)

// Phases: which command of a step.
const (
	phaseDetect   = "detect"
	phaseRun      = "run"
	phaseVerify   = "verify"
	phaseRollback = "rollback"
)

// unfinishedStates is the SQL list of non-final states.
const unfinishedStates = `('detecting', 'applying', 'verifying', 'rolling_back')`

func final(state string) bool {
	switch state {
	case stateDetecting, stateApplying, stateVerifying, stateRollingBack:
		return false
	}
	return true
}

// record is one row of assignments.
type record struct {
	Migration  string
	Attempt    int
	Generation int
	Action     string
	From, To   string
	Steps      []wire.StepSpec
	Signature  string // of Steps, as the hub sent it
	State      string
	Step       int
	Phase      string
	InFlight   bool
	Applied    []int
	RolledBack []int
	Error      string
	ExitCode   *int
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// journal is the runner's SQLite file.
type journal struct {
	path string
	db   *sql.DB
}

// sqliteMagic is the first 16 bytes of every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

func openJournal(ctx context.Context, path string) (*journal, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	// None of these touches the file, so a damaged one is still untouched when quick_check runs.
	// synchronous is per connection, so it belongs here, where every new connection gets it.
	for _, p := range []string{"busy_timeout(10000)", "synchronous(FULL)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	// Escaped, so that '?', '#' or '%' in the path cannot point SQLite at another file.
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open runner journal %s: %w", path, err)
	}
	// One connection: the runner is the journal's only user and serialises its writes anyway.
	db.SetMaxOpenConns(1)
	j := &journal{path: path, db: db}
	if err := j.init(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return j, nil
}

func (j *journal) init(ctx context.Context) error {
	var check string
	err := j.db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check)
	switch {
	case err == nil && check == "ok":
	case err != nil && (health.Classify(err) == health.Wait || health.Classify(err) == health.Operator && !health.Damaged(err)):
		// A full disk, a read-only file system, a permission: not the file's fault.
		return fmt.Errorf("open runner journal %s: %w", j.path, err)
	default:
		if err == nil {
			err = errors.New(check)
		}
		return health.NeedsOperator(fmt.Errorf("runner journal %s is damaged (%v); it holds the progress of migrations on this node: "+
			"move it aside (keep it for inspection), check the node by hand, and restart the agent; it was left untouched", j.path, err))
	}
	var id, ver, tables int
	for _, q := range []struct {
		sql string
		dst *int
	}{{"PRAGMA application_id", &id}, {"PRAGMA user_version", &ver}, {"SELECT count(*) FROM sqlite_master", &tables}} {
		if err := j.db.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return fmt.Errorf("open runner journal %s: %w", j.path, err)
		}
	}
	switch {
	case id == 0 && ver == 0 && tables == 0:
		if err := j.walMode(ctx); err != nil {
			return err
		}
		return j.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range []string{schema,
				fmt.Sprintf("PRAGMA application_id = %d", appID),
				fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)} {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("create runner journal %s: %w", j.path, err)
				}
			}
			return nil
		})
	case id != appID:
		return health.NeedsOperator(fmt.Errorf("%s is a SQLite database but not a Godwit runner journal; refusing to touch it", j.path))
	case ver > schemaVersion:
		return health.NeedsOperator(fmt.Errorf("runner journal %s has schema version %d, newer than this agent's %d; "+
			"run the newer agent; the file was left untouched", j.path, ver, schemaVersion))
	}
	if err := j.walMode(ctx); err != nil {
		return err
	}
	return j.upgrade(ctx, ver)
}

// upgrade brings a journal of schema version ver to schemaVersion, one version per transaction.
func (j *journal) upgrade(ctx context.Context, ver int) error {
	for ; ver < schemaVersion; ver++ {
		err := j.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range append(upgrades[ver], fmt.Sprintf("PRAGMA user_version = %d", ver+1)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("upgrade runner journal %s from schema version %d: %w", j.path, ver, err)
		}
	}
	return nil
}

func (j *journal) walMode(ctx context.Context) error {
	var mode string
	if err := j.db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("open runner journal %s: journal mode: %w", j.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("open runner journal %s: journal mode is %q, want wal", j.path, mode)
	}
	return nil
}

// checkFile refuses a file that exists, is not empty and is not a SQLite database, before SQLite
// gets a chance to write to it.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runner journal %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("runner journal %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return health.NeedsOperator(fmt.Errorf("runner journal %s is not a regular file; refusing to touch it", path))
	}
	if st.Size() == 0 {
		return nil
	}
	head := make([]byte, len(sqliteMagic))
	if n, _ := f.Read(head); n < len(head) || string(head) != sqliteMagic {
		return health.NeedsOperator(fmt.Errorf("runner journal %s exists and is not a SQLite database; it may hold the progress of "+
			"migrations on this node: move it aside and restart the agent; refusing to touch it", path))
	}
	return nil
}

func (j *journal) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// meta returns the highest epoch accepted and the last desired document (nil if none).
func (j *journal) meta(ctx context.Context) (int64, []byte, error) {
	var epoch int64
	var desired []byte
	err := j.db.QueryRowContext(ctx, "SELECT max_epoch, desired FROM meta WHERE id = 1").Scan(&epoch, &desired)
	return epoch, desired, err
}

func (j *journal) setDesired(ctx context.Context, epoch int64, doc []byte) error {
	_, err := j.db.ExecContext(ctx, "UPDATE meta SET max_epoch = ?, desired = ? WHERE id = 1", epoch, doc)
	return err
}

const recordColumns = `migration, attempt, generation, action, from_version, to_version, steps, state, step,
	phase, in_flight, applied, rolled_back, error, exit_code, created_at, updated_at, signature`

func (j *journal) query(ctx context.Context, where string, args ...any) ([]*record, error) {
	rows, err := j.db.QueryContext(ctx, "SELECT "+recordColumns+" FROM assignments a "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*record
	for rows.Next() {
		var r record
		var steps, applied, rolledBack []byte
		var exit sql.NullInt64
		var created, updated int64
		if err := rows.Scan(&r.Migration, &r.Attempt, &r.Generation, &r.Action, &r.From, &r.To, &steps, &r.State,
			&r.Step, &r.Phase, &r.InFlight, &applied, &rolledBack, &r.Error, &exit, &created, &updated, &r.Signature); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			raw []byte
			dst any
		}{{steps, &r.Steps}, {applied, &r.Applied}, {rolledBack, &r.RolledBack}} {
			if err := json.Unmarshal(f.raw, f.dst); err != nil {
				return nil, fmt.Errorf("assignment %s attempt %d: %w", r.Migration, r.Attempt, err)
			}
		}
		if exit.Valid {
			c := int(exit.Int64)
			r.ExitCode = &c
		}
		r.CreatedAt, r.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
		out = append(out, &r)
	}
	return out, rows.Err()
}

// unfinished returns the assignments that are not in a final state, oldest first.
func (j *journal) unfinished(ctx context.Context) ([]*record, error) {
	return j.query(ctx, "WHERE state IN "+unfinishedStates+" ORDER BY seq")
}

// latest returns the highest attempt recorded for migration, or nil.
func (j *journal) latest(ctx context.Context, migration string) (*record, error) {
	recs, err := j.query(ctx, "WHERE migration = ? ORDER BY attempt DESC LIMIT 1", migration)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

// latestAll returns the highest attempt of every migration, oldest first.
func (j *journal) latestAll(ctx context.Context) ([]*record, error) {
	return j.query(ctx, "WHERE attempt = (SELECT max(attempt) FROM assignments b WHERE b.migration = a.migration) ORDER BY seq")
}

// put inserts or updates rec.
func (j *journal) put(ctx context.Context, tx *sql.Tx, r *record) error {
	steps, err := json.Marshal(r.Steps)
	if err != nil {
		return err
	}
	applied, _ := json.Marshal(orEmpty(r.Applied))
	rolledBack, _ := json.Marshal(orEmpty(r.RolledBack))
	var exit any
	if r.ExitCode != nil {
		exit = *r.ExitCode
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO assignments (`+recordColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (migration, attempt) DO UPDATE SET generation = excluded.generation, action = excluded.action,
			from_version = excluded.from_version, to_version = excluded.to_version, steps = excluded.steps,
			signature = excluded.signature,
			state = excluded.state, step = excluded.step, phase = excluded.phase, in_flight = excluded.in_flight,
			applied = excluded.applied, rolled_back = excluded.rolled_back, error = excluded.error,
			exit_code = excluded.exit_code, updated_at = excluded.updated_at`,
		r.Migration, r.Attempt, r.Generation, r.Action, r.From, r.To, steps, r.State, r.Step, r.Phase, r.InFlight,
		applied, rolledBack, r.Error, exit, r.CreatedAt.UnixNano(), r.UpdatedAt.UnixNano(), r.Signature)
	return err
}

func orEmpty(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// commandStarted records that a command is about to start and returns its row id.
func (j *journal) commandStarted(ctx context.Context, tx *sql.Tx, r *record, step int, phase string, at time.Time) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO commands (migration, attempt, generation, step, phase, started_at)
		VALUES (?, ?, ?, ?, ?, ?)`, r.Migration, r.Attempt, r.Generation, step, phase, at.UnixNano())
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// commandFinished records a command's result.
func (j *journal) commandFinished(ctx context.Context, tx *sql.Tx, id int64, res execute.Result, errText string, at time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE commands SET finished_at = ?, exit_code = ?, timed_out = ?, error = ?,
		output_tail = ? WHERE id = ?`, at.UnixNano(), res.ExitCode, res.TimedOut, errText, outputTail(res), id)
	return err
}

// commandGroup records the process group of the command of row id, and the moment it is
// released to run (which replaces the time it was recorded as started).
func (j *journal) commandGroup(ctx context.Context, tx *sql.Tx, id int64, g procgroup.Group, at time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE commands SET pgid = ?, boot_id = ?, pid_ns = ?, start_time = ?, started_at = ?
		WHERE id = ?`, g.ID, g.BootID, g.PidNS, int64(g.StartTime), at.UnixNano(), id)
	return err
}

// stepApplied reports whether the audit trail shows step of (migration, attempt) applied at some
// point: a run of it that succeeded, or a detect that said it was done.
func (j *journal) stepApplied(ctx context.Context, migration string, attempt, step int) (bool, error) {
	var applied bool
	err := j.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM commands WHERE migration = ? AND attempt = ? AND step = ?
		AND finished_at IS NOT NULL AND timed_out = 0 AND error = ''
		AND ((phase = 'run' AND exit_code = 0) OR (phase = 'detect' AND exit_code = 1)))`, migration, attempt, step).Scan(&applied)
	return applied, err
}

// commandEnded closes the row of a command whose result is unknown (the agent stopped while
// it ran), saying what became of it.
func (j *journal) commandEnded(ctx context.Context, tx *sql.Tx, id int64, text string, at time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE commands SET finished_at = ?, error = ? WHERE id = ?`, at.UnixNano(), text, id)
	return err
}

// openCommand is a command the journal says was running when the agent stopped.
type openCommand struct {
	id         int64
	migration  string
	attempt    int
	generation int
	step       int
	phase      string
	startedAt  time.Time
	group      *procgroup.Group // nil: none recorded (it had not been released, or an older agent ran it)
}

// openCommands returns the commands without a result, oldest first.
func (j *journal) openCommands(ctx context.Context) ([]openCommand, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT id, migration, attempt, generation, step, phase, started_at, pgid, boot_id,
		pid_ns, start_time FROM commands WHERE finished_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []openCommand
	for rows.Next() {
		var c openCommand
		var started int64
		var pgid, startTime sql.NullInt64
		var boot, ns string
		if err := rows.Scan(&c.id, &c.migration, &c.attempt, &c.generation, &c.step, &c.phase, &started, &pgid, &boot,
			&ns, &startTime); err != nil {
			return nil, err
		}
		c.startedAt = time.Unix(0, started).UTC()
		if pgid.Valid && boot != "" && startTime.Valid {
			c.group = &procgroup.Group{ID: int(pgid.Int64), BootID: boot, PidNS: ns, StartTime: uint64(startTime.Int64)}
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// leftApplied returns the steps that the attempts of migration before attempt applied on this
// node and did not roll back, and the latest of those attempts (nil when there is none). Each
// attempt answers for what the one before it left (a rollback takes it over, see
// Runner.inherit), so a step counts until an attempt's rollback undid it.
func (j *journal) leftApplied(ctx context.Context, migration string, attempt int) ([]int, *record, error) {
	recs, err := j.query(ctx, "WHERE migration = ? AND attempt < ? ORDER BY attempt", migration, attempt)
	if err != nil || len(recs) == 0 {
		return nil, nil, err
	}
	var left []int
	for _, r := range recs {
		for _, a := range r.Applied {
			if !slices.Contains(left, a) {
				left = append(left, a)
			}
		}
		left = slices.DeleteFunc(left, func(a int) bool { return slices.Contains(r.RolledBack, a) })
	}
	return left, recs[len(recs)-1], nil
}

// get returns the record of (migration, attempt), or nil.
func (j *journal) get(ctx context.Context, migration string, attempt int) (*record, error) {
	recs, err := j.query(ctx, "WHERE migration = ? AND attempt = ?", migration, attempt)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	return recs[0], nil
}

func (j *journal) queueEvents(ctx context.Context, tx *sql.Tx, events []wire.Event) error {
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO pending_events (id, payload) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", e.ID, b); err != nil {
			return err
		}
	}
	return nil
}

func (j *journal) pendingEvents(ctx context.Context) ([]wire.Event, error) {
	rows, err := j.db.QueryContext(ctx, "SELECT payload FROM pending_events ORDER BY seq")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []wire.Event
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var e wire.Event
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (j *journal) eventDelivered(ctx context.Context, id string) error {
	_, err := j.db.ExecContext(ctx, "DELETE FROM pending_events WHERE id = ?", id)
	return err
}
