package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"godwit.dev/godwit/internal/wire"
)

// historySQL records, inside the transaction of every write to the leadership table, what was
// written: the fence check of every leader write (an UPDATE of its row under its epoch), every
// TouchEpoch and every AdoptEpoch. A trigger row commits if and only if its write does, and the
// row lock the write holds on its leadership row until commit makes the ids of one name's rows
// follow the commit order.
const historySQL = `
CREATE TABLE ha_history (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, epoch BIGINT NOT NULL, holder TEXT NOT NULL);
CREATE FUNCTION ha_record() RETURNS trigger AS $$
BEGIN
  INSERT INTO ha_history (name, epoch, holder) VALUES (NEW.name, NEW.epoch, NEW.holder);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER ha_record AFTER INSERT OR UPDATE ON leadership FOR EACH ROW EXECUTE FUNCTION ha_record();
`

type haWrite struct {
	id     int64
	name   string
	epoch  int64
	holder string
}

// checkHistory is the checker: per leadership name, in commit order, no write lands under an
// epoch older than one already accepted, and each epoch belongs to one replica. Together: never
// two replicas' writes accepted under overlapping epochs.
func checkHistory(ws []haWrite) error {
	newest := map[string]haWrite{}
	owner := map[int64]string{}
	for _, w := range ws {
		if w.epoch == 0 {
			continue // the schema's reset of pre-lease epochs
		}
		if n, ok := newest[w.name]; ok && w.epoch < n.epoch {
			return fmt.Errorf("write #%d of %s under epoch %d by %s accepted after #%d under epoch %d by %s",
				w.id, w.name, w.epoch, w.holder, n.id, n.epoch, n.holder)
		}
		if o, ok := owner[w.epoch]; ok && o != w.holder {
			return fmt.Errorf("epoch %d written by two replicas: %s and %s (#%d)", w.epoch, o, w.holder, w.id)
		}
		owner[w.epoch] = w.holder
		newest[w.name] = w
	}
	return nil
}

// readHistory reads every accepted leader write, in commit order, and the epochs they were
// written under.
func readHistory(t *testing.T, db *sql.DB) ([]haWrite, map[int64]bool) {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT id, name, epoch, holder FROM ha_history ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ws []haWrite
	epochs := map[int64]bool{}
	for rows.Next() {
		var w haWrite
		if err := rows.Scan(&w.id, &w.name, &w.epoch, &w.holder); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
		epochs[w.epoch] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ws, epochs
}

func TestCheckHistoryFindsOverlaps(t *testing.T) {
	ok := []haWrite{{1, "controller", 3, "a"}, {2, "sweeps", 3, "a"}, {3, "controller", 3, "a"}, {4, "controller", 9, "b"}, {5, "sweeps", 9, "b"}}
	if err := checkHistory(ok); err != nil {
		t.Fatalf("a clean history: %v", err)
	}
	late := append(append([]haWrite{}, ok...), haWrite{6, "controller", 3, "a"})
	if err := checkHistory(late); err == nil || !strings.Contains(err.Error(), "under epoch 3 by a accepted after") {
		t.Fatalf("a deposed leader's late write: %v", err)
	}
	shared := append(append([]haWrite{}, ok...), haWrite{6, "controller", 9, "c"})
	if err := checkHistory(shared); err == nil || !strings.Contains(err.Error(), "two replicas") {
		t.Fatalf("one epoch, two replicas: %v", err)
	}
}

// Randomized faults over three hub processes (PostgreSQL, embedded JetStream cluster, one real
// agent, small migrations applied throughout): each trial kills (-9, 3 in 10), pauses (SIGSTOP
// for 0.5–1.5 ttl, 4 in 10) or partitions (its NATS server's routes cut for 0.5–1.5 ttl, 3 in
// 10) the leader or a follower — the kill of a hub is also the loss of one NATS server — then
// restores it and waits for a leader. The checker reads every accepted leader write from
// the database: never two replicas' writes under overlapping epochs. GODWIT_HA_TRIALS sets the
// number of trials (default 20; godwit bench ha measures failover times).
func TestHARandomizedFaults(t *testing.T) {
	t.Parallel()
	trials := 20
	if s := os.Getenv("GODWIT_HA_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("GODWIT_HA_TRIALS=%q", s)
		}
		trials = n
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("GODWIT_HA_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (GODWIT_HA_SEED), %d trials", seed, trials)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	// Shorter than the drills' timing, within the rule (2×0.3 + 0.3 + 0.7 ≤ 2).
	ttl := 2 * time.Second
	c := startHACluster(t, []string{"--lease-ttl", ttl.String(), "--lease-renew-interval", "300ms",
		"--lease-call-timeout", "300ms", "--lease-margin", "700ms"})
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), historySQL); err != nil {
		t.Fatal(err)
	}
	lead, epoch := c.leader(t, []int{0, 1, 2}, 0, 60*time.Second)
	front := func() *hubProc {
		for _, h := range c.hubs {
			select {
			case <-h.done:
			default:
				return h
			}
		}
		t.Fatal("no hub running")
		return nil
	}
	tok := strings.TrimSpace(front().cli(t, "token", "create", "--uses", "2", "--ttl", "10m"))
	front().startAgent(t, filepath.Join(c.root, "rand-1"), tok, "role=rand")
	eventually(t, 60*time.Second, "agent online", func() error {
		if s := statusByName(front().agents(t))["rand-1"].Status; s != wire.StatusOnline {
			return fmt.Errorf("rand-1 is %q", s)
		}
		return nil
	})
	actions := map[string]int{}
	for trial := range trials {
		spec := fmt.Sprintf("apiVersion: godwit.dev/v1\nkind: Migration\nmetadata: {name: t%d}\nspec:\n  selector: {matchLabels: {role: rand}}\n  toVersion: \"2\"\n  steps:\n", trial)
		for s := range 3 {
			spec += fmt.Sprintf("    - name: s%d\n      run: 'echo %d-%d >> out; sleep 0.2'\n", s, trial, s)
		}
		front().cli(t, "apply", "-f", writeTemp(t, spec))
		target := lead
		if rng.IntN(3) == 0 {
			target = others(lead)[rng.IntN(2)]
		}
		role := "leader"
		if target != lead {
			role = "follower"
		}
		h := c.hubs[target]
		switch r := rng.IntN(10); {
		case r < 3:
			actions["kill "+role]++
			h.signal(syscall.SIGKILL)
			h.wait(10 * time.Second)
			c.start(t, target)
		case r < 7:
			actions["pause "+role]++
			h.signal(syscall.SIGSTOP)
			time.Sleep(ttl/2 + time.Duration(rng.Int64N(int64(ttl))))
			h.signal(syscall.SIGCONT)
		default:
			actions["partition "+role]++
			c.partition(target, true)
			time.Sleep(ttl/2 + time.Duration(rng.Int64N(int64(ttl))))
			c.partition(target, false)
		}
		lead, epoch = c.leader(t, []int{0, 1, 2}, 0, 90*time.Second)
		t.Logf("trial %d: %s of hub-%d; hub-%d leads at epoch %d", trial+1, role, target, lead, epoch)
	}
	ws, epochs := readHistory(t, db)
	t.Logf("actions %v; %d leader writes accepted under %d epochs", actions, len(ws), len(epochs))
	if len(epochs) < 2 {
		t.Fatalf("only %d epochs wrote anything over %d trials: the faults did not move the leadership", len(epochs), trials)
	}
	if err := checkHistory(ws); err != nil {
		t.Fatal(err)
	}
}
