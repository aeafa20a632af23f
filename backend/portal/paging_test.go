package portal

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestPageOf(t *testing.T) {
	var names []string
	for i := range 7 {
		names = append(names, fmt.Sprintf("n%d", 6-i)) // unsorted on purpose
	}
	for _, tc := range []struct {
		after                 string
		want                  []string
		from, to              int
		first, prev, nextPage string
	}{
		{"", []string{"n0", "n1", "n2"}, 1, 3, "", "", "/x?after=n2"},
		{"n2", []string{"n3", "n4", "n5"}, 4, 6, "/x", "/x", "/x?after=n5"},
		{"n5", []string{"n6"}, 7, 7, "/x", "/x?after=n2", ""},
		// A name that is gone still places the page.
		{"n25", []string{"n3", "n4", "n5"}, 4, 6, "/x", "/x", "/x?after=n5"},
		{"zz", nil, 8, 7, "/x", "/x?after=n3", ""},
	} {
		shown, p := pageOf(slices.Clone(names), tc.after, 3, "/x")
		if !slices.Equal(shown, tc.want) || p.Total != 7 || p.From != tc.from || p.To != tc.to ||
			p.FirstURL != tc.first || p.PrevURL != tc.prev || p.NextURL != tc.nextPage {
			t.Errorf("after %q: %v %+v", tc.after, shown, p)
		}
	}
}

func TestEachTurnsAPanicIntoTheRowsFailure(t *testing.T) {
	got := make([]int, 20)
	var failed []int
	each(len(got), func(i int) {
		if i == 13 {
			panic("bug")
		}
		got[i] = i * i
	}, func(i int, err error) {
		if err == nil || errors.Unwrap(err) != nil && false {
			t.Errorf("row %d: no error", i)
		}
		failed = append(failed, i)
	})
	if !slices.Equal(failed, []int{13}) || got[12] != 144 || got[19] != 361 {
		t.Fatalf("failed %v, got %v", failed, got)
	}
}
