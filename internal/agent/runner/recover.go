package runner

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/procgroup"
	"godwit.dev/godwit/internal/wire"
)

// outcome is what became of a command that was running when the agent stopped, as the later
// events of its assignment tell it.
type outcome struct {
	what   string // "ended with the agent", "outlived the agent and ended on its own after 2.1s", …
	orphan bool   // something of it outlived the agent
	killed bool   // … and the restarted agent stopped it
}

// clause is the outcome between prefix and suffix, or "" when nothing is known.
func (o outcome) clause(prefix, suffix string) string {
	if o.what == "" {
		return ""
	}
	return prefix + o.what + suffix
}

// extra is the data.extra of the recovery detect's event.
func (o outcome) extra(needed bool) map[string]any {
	x := map[string]any{"needed": needed, "recovered": true}
	if o.orphan {
		x["orphan"] = true
		x["orphan_killed"] = o.killed
	}
	return x
}

func recoveredKey(migration string, attempt int) string {
	return fmt.Sprintf("%s/%d", migration, attempt)
}

// takeRecovered returns, once, what became of rec's interrupted command.
func (r *Runner) takeRecovered(rec *record) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := recoveredKey(rec.Migration, rec.Attempt)
	o := r.recovered[k]
	delete(r.recovered, k)
	return outcomeFrom(o)
}

// The recovered map keeps the outcome's text with a one-letter prefix: o (orphan ended on its
// own), k (orphan killed), - (ended with the agent).
func outcomeFrom(s string) outcome {
	if s == "" {
		return outcome{}
	}
	o := outcome{what: s[1:]}
	switch s[0] {
	case 'o':
		o.orphan = true
	case 'k':
		o.orphan, o.killed = true, true
	}
	return o
}

func (r *Runner) noteRecovered(migration string, attempt int, kind byte, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recovered[recoveredKey(migration, attempt)] = string(kind) + what
}

// recoverCommands deals with the commands the journal says were running when the agent stopped,
// before anything else runs or is judged. A command whose process group has nothing left is
// closed as "no result". A command of which something still runs (its leader survived, or a
// child that the parent-death signal does not reach) is waited for, up to its step's timeout
// counted from when it started, and then stopped (SIGTERM, then SIGKILL after Config.Grace); a
// cancel or a rollback of its assignment stops it at once, and so does the agent stopping. Each
// such orphan is reported: migration.step.orphaned when found, then migration.step.orphan_exited
// or migration.step.orphan_killed.
func (r *Runner) recoverCommands(ctx context.Context) error {
	cmds, err := r.j.openCommands(ctx)
	if err != nil {
		return err
	}
	if len(cmds) == 0 {
		return nil
	}
	r.log.Warn("the agent stopped while commands ran; looking for what is left of them before anything else runs",
		"commands", len(cmds))
	for _, c := range cmds {
		if err := r.recoverCommand(ctx, c); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

func (r *Runner) recoverCommand(ctx context.Context, c openCommand) error {
	var members []int
	if c.group != nil {
		var err error
		if members, err = c.group.Members(); err != nil {
			return fmt.Errorf("look for the %s command of %s attempt %d step %d: %w", c.phase, c.migration, c.attempt, c.step, err)
		}
	}
	if len(members) == 0 {
		text := "no result: the agent stopped while it ran; no process group was recorded (it had not been released to run, or an older agent ran it)"
		if c.group != nil {
			text = fmt.Sprintf("no result: the agent stopped while it ran; nothing of its %s was left at the restart", c.group)
			r.noteRecovered(c.migration, c.attempt, '-', "ended with the agent")
		}
		return r.write(ctx, func(ctx context.Context) error {
			return r.j.tx(ctx, func(tx *sql.Tx) error { return r.j.commandEnded(ctx, tx, c.id, text, r.now()) })
		})
	}
	rec, err := r.j.get(ctx, c.migration, c.attempt)
	if err != nil {
		return err
	}
	if rec == nil || c.step < 0 || c.step >= len(rec.Steps) {
		return fmt.Errorf("the %s command of %s attempt %d step %d is in the journal without its assignment", c.phase,
			c.migration, c.attempt, c.step)
	}
	s := rec.Steps[c.step]
	timeout := s.Timeout()
	var left time.Duration // 0: no timeout
	leftText := "no timeout"
	if timeout > 0 {
		left = max(c.startedAt.Add(timeout).Sub(r.now()), time.Nanosecond)
		leftText = fmt.Sprintf("%s of its %s timeout left", left.Round(time.Millisecond), timeout)
	}
	what := fmt.Sprintf("the %s command of step %d (%s)", c.phase, c.step, s.Name)
	r.log.Warn("a command outlived the agent; nothing of its step runs or is judged until it has ended",
		"migration", c.migration, "attempt", c.attempt, "step", c.step, "phase", c.phase, "pgid", c.group.ID, "pids", members,
		"timeout_left", left)
	data := map[string]any{"pgid": c.group.ID, "pids": members, "started_at": c.startedAt.Format(time.RFC3339Nano)}
	if err := r.save(ctx, rec, nil, r.event(rec, wire.EventMigrationStepOrphaned, wire.SeverityWarning, detail{step: c.step,
		phase: c.phase, extra: data, msg: fmt.Sprintf("%s outlived the agent: %s still has %d processes (%v); nothing of the step "+
			"runs or is judged until it has ended: waiting for it (%s), then stopping it", what, c.group, len(members), members,
			leftText)})); err != nil {
		return err
	}

	// It stands for the command in flight: a cancel or rollback of its assignment stops it.
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.mu.Lock()
	r.cur = &inFlight{migration: rec.Migration, attempt: rec.Attempt, generation: rec.Generation,
		rollingBack: rec.State == stateRollingBack, cancel: cancel}
	if cause := r.preemptsLocked(r.cur); cause != nil {
		cancel(cause)
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cur = nil
		r.mu.Unlock()
	}()

	began := time.Now()
	var deadline time.Time
	if left > 0 {
		deadline = began.Add(left)
	}
	err = c.group.Wait(cctx.Done(), deadline)
	waited := time.Since(began).Round(time.Millisecond)
	var typ, severity, text, why string
	var kind byte
	switch {
	case err == nil:
		typ, severity, kind = wire.EventMigrationStepOrphanExited, wire.SeverityInfo, 'o'
		text = fmt.Sprintf("outlived the agent and ended on its own after %s", waited)
		r.log.Info("the command that outlived the agent has ended", "migration", c.migration, "attempt", c.attempt,
			"step", c.step, "phase", c.phase, "waited", waited)
	case err == procgroup.ErrStillRunning:
		switch {
		case ctx.Err() != nil:
			why = "the agent is stopping"
		case cctx.Err() != nil:
			why = context.Cause(cctx).Error()
		default:
			why = fmt.Sprintf("its %s timeout passed", timeout)
		}
		grace := r.cfg.Grace
		if grace <= 0 {
			grace = execute.DefaultGrace
		}
		r.log.Warn("stopping the command that outlived the agent", "migration", c.migration, "attempt", c.attempt,
			"step", c.step, "phase", c.phase, "pgid", c.group.ID, "reason", why)
		killed, serr := c.group.Stop(grace, ctx.Done())
		if serr == procgroup.ErrStillRunning {
			// The agent is stopping and it is not gone yet: the next start looks again.
			r.log.Warn("stopping: the command that outlived the agent is still there; the next start looks for it again",
				"pgid", c.group.ID)
			return nil
		}
		if serr != nil {
			return fmt.Errorf("stop %s of %s: %w", c.group, what, serr)
		}
		signals := "SIGTERM"
		if killed {
			signals = fmt.Sprintf("SIGTERM, then SIGKILL after %s", grace)
		}
		typ, severity, kind = wire.EventMigrationStepOrphanKilled, wire.SeverityWarning, 'k'
		text = fmt.Sprintf("outlived the agent and was stopped (%s) after %s because %s", signals, waited, why)
	default:
		return fmt.Errorf("wait for %s of %s: %w", c.group, what, err)
	}
	r.noteRecovered(c.migration, c.attempt, kind, text)
	if latest, err := r.j.get(ctx, c.migration, c.attempt); err == nil && latest != nil {
		rec = latest
	}
	return r.save(ctx, rec, func(ctx context.Context, tx *sql.Tx) error {
		return r.j.commandEnded(ctx, tx, c.id, "no result: the agent stopped while it ran; it "+text, r.now())
	}, r.event(rec, typ, severity, detail{step: c.step, phase: c.phase, extra: data,
		msg: fmt.Sprintf("%s %s; its step is judged from here", what, text)}))
}
