package sqlstore

import (
	"database/sql"
	"strconv"
	"strings"
)

// pageQuery builds the WHERE clause of a keyset-paged listing with numbered arguments.
type pageQuery struct {
	where []string
	args  []any
}

// arg adds v as an argument and returns its placeholder.
func (q *pageQuery) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// and adds terms to the WHERE clause.
func (q *pageQuery) and(terms ...string) { q.where = append(q.where, terms...) }

// sql is "<selectFrom> [WHERE …] ORDER BY <order> LIMIT <limit+1>": one row more than a page,
// to tell whether another page follows.
func (q *pageQuery) sql(selectFrom, order string, limit int) string {
	text := selectFrom
	if len(q.where) > 0 {
		text += " WHERE " + strings.Join(q.where, " AND ")
	}
	return text + " ORDER BY " + order + " LIMIT " + q.arg(limit+1)
}

// readPage scans the rows of a pageQuery: the first limit of them, and, when there was one more,
// the cursor after the last one kept. It closes rows.
func readPage[T any](rows *sql.Rows, limit int, scan func(row interface{ Scan(...any) error }) (T, error), cursor func(T) string) ([]T, string, error) {
	defer rows.Close()
	out := make([]T, 0, limit+1)
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, cursor(out[limit-1]), nil
}
