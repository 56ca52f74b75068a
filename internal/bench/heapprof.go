package bench

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// heapEntry is one function's share of the in-use heap: flat is what it allocated itself (it
// is the innermost frame), cum what it and everything it called allocated.
type heapEntry struct {
	Func      string
	Flat, Cum int64
}

// heapSummary is what a heap profile says of the in-use space, by function.
type heapSummary struct {
	InUse   int64       // in-use bytes of every sample
	Entries []heapEntry // every function, largest flat first
}

// top returns the n largest entries by flat (byCum false) or by cum.
func (s heapSummary) top(n int, byCum bool) []heapEntry {
	e := slices.Clone(s.Entries)
	key := func(x heapEntry) int64 {
		if byCum {
			return x.Cum
		}
		return x.Flat
	}
	slices.SortStableFunc(e, func(a, b heapEntry) int {
		if d := key(b) - key(a); d != 0 {
			if d > 0 {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Func, b.Func)
	})
	return e[:min(n, len(e))]
}

// readHeapSummary reads a heap profile as runtime/pprof writes it (gzipped profile.proto) and
// sums its inuse_space by function. It reads only what it needs of the format: sample types,
// samples, locations, functions and the string table.
func readHeapSummary(path string) (heapSummary, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return heapSummary{}, err
	}
	if len(raw) > 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return heapSummary{}, fmt.Errorf("heap profile %s: %w", path, err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return heapSummary{}, fmt.Errorf("heap profile %s: %w", path, err)
		}
	}
	s, err := summarizeHeap(raw)
	if err != nil {
		return s, fmt.Errorf("heap profile %s: %w", path, err)
	}
	return s, nil
}

type pbSample struct {
	locs   []uint64
	values []int64
}

func summarizeHeap(b []byte) (heapSummary, error) {
	var (
		sampleTypes [][2]int64 // type, unit: string table indexes
		samples     []pbSample
		locFuncs    = map[uint64][]uint64{} // location → function IDs, innermost first
		funcNames   = map[uint64]int64{}    // function → name's string index
		strs        []string
	)
	err := pbFields(b, func(num int, v uint64, data []byte) error {
		switch num {
		case 1: // sample_type
			var t [2]int64
			err := pbFields(data, func(n int, v uint64, _ []byte) error {
				if n == 1 || n == 2 {
					t[n-1] = int64(v)
				}
				return nil
			})
			sampleTypes = append(sampleTypes, t)
			return err
		case 2: // sample
			var s pbSample
			err := pbFields(data, func(n int, v uint64, d []byte) error {
				switch n {
				case 1:
					if d == nil {
						s.locs = append(s.locs, v)
						return nil
					}
					return pbPacked(d, func(x uint64) { s.locs = append(s.locs, x) })
				case 2:
					if d == nil {
						s.values = append(s.values, int64(v))
						return nil
					}
					return pbPacked(d, func(x uint64) { s.values = append(s.values, int64(x)) })
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case 4: // location
			var id uint64
			var fns []uint64
			err := pbFields(data, func(n int, v uint64, d []byte) error {
				switch n {
				case 1:
					id = v
				case 4: // line
					return pbFields(d, func(n int, v uint64, _ []byte) error {
						if n == 1 {
							fns = append(fns, v)
						}
						return nil
					})
				}
				return nil
			})
			locFuncs[id] = fns
			return err
		case 5: // function
			var id uint64
			var name int64
			err := pbFields(data, func(n int, v uint64, _ []byte) error {
				switch n {
				case 1:
					id = v
				case 2:
					name = int64(v)
				}
				return nil
			})
			funcNames[id] = name
			return err
		case 6: // string_table
			strs = append(strs, string(data))
		}
		return nil
	})
	if err != nil {
		return heapSummary{}, err
	}
	str := func(i int64) string {
		if i < 0 || i >= int64(len(strs)) {
			return ""
		}
		return strs[i]
	}
	col := -1
	for i, t := range sampleTypes {
		if str(t[0]) == "inuse_space" {
			col = i
		}
	}
	if col < 0 {
		return heapSummary{}, errors.New("no inuse_space sample type: not a heap profile")
	}
	byFunc := map[string]*heapEntry{}
	entry := func(id uint64) *heapEntry {
		name := str(funcNames[id])
		if name == "" {
			name = "?"
		}
		e := byFunc[name]
		if e == nil {
			e = &heapEntry{Func: name}
			byFunc[name] = e
		}
		return e
	}
	var sum heapSummary
	for _, s := range samples {
		if col >= len(s.values) || s.values[col] == 0 {
			continue
		}
		v := s.values[col]
		sum.InUse += v
		seen := map[*heapEntry]bool{}
		for i, loc := range s.locs {
			for j, fn := range locFuncs[loc] {
				e := entry(fn)
				if i == 0 && j == 0 {
					e.Flat += v
				}
				if !seen[e] {
					seen[e] = true
					e.Cum += v
				}
			}
		}
	}
	for _, e := range byFunc {
		sum.Entries = append(sum.Entries, *e)
	}
	sum.Entries = sum.top(len(sum.Entries), false)
	return sum, nil
}

// pbFields calls fn for each field of a protocol buffer message: the value of a varint (data
// nil) or the bytes of a length-delimited field. Fixed-width fields are skipped.
func pbFields(b []byte, fn func(num int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad protobuf field key")
		}
		b = b[n:]
		num, typ := int(key>>3), key&7
		switch typ {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return errors.New("bad protobuf varint")
			}
			b = b[n:]
			if err := fn(num, v, nil); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errors.New("short protobuf fixed64")
			}
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errors.New("bad protobuf length")
			}
			data := b[n : n+int(l)]
			b = b[n+int(l):]
			if data == nil {
				data = []byte{}
			}
			if err := fn(num, 0, data); err != nil {
				return err
			}
		case 5:
			if len(b) < 4 {
				return errors.New("short protobuf fixed32")
			}
			b = b[4:]
		default:
			return fmt.Errorf("protobuf wire type %d not supported", typ)
		}
	}
	return nil
}

// pbPacked calls fn for each varint of a packed repeated field.
func pbPacked(b []byte, fn func(uint64)) error {
	for len(b) > 0 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad packed protobuf varint")
		}
		fn(v)
		b = b[n:]
	}
	return nil
}
