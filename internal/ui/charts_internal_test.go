package ui

import (
	"fmt"
	"testing"
)

// A fleet map square is the path it was when formatted with fmt ("M<x> <y>h6v6h-6z"), at the
// first cell, across rows and at the far corner of a 10,000-agent group.
func TestAppendSquare(t *testing.T) {
	var b []byte
	var want string
	for _, i := range []int{0, 1, 99, 100, 4321, 9999} {
		x, y := (i%mapColumns)*(mapCell+mapGap), (i/mapColumns)*(mapCell+mapGap)
		b = appendSquare(b, x, y)
		want += fmt.Sprintf("M%g %gh%gv%gh-%gz", float64(x), float64(y), float64(mapCell), float64(mapCell), float64(mapCell))
	}
	if string(b) != want {
		t.Fatalf("squares\n  %s\nwant\n  %s", b, want)
	}
}
